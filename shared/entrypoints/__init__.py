"""Function entry points (blueprints): thin triggers that parse input, call one service, map the result."""
