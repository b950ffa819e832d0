"""`python -m sandbox --state-dir DIR [--seed FILE]`: run the sandbox until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from sandbox.server import Sandbox


async def _run(state_dir: Path, seed: dict[str, Any] | None) -> None:
    sandbox = Sandbox(state_dir, seed)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await sandbox.start()
    print(json.dumps(sandbox.endpoints), flush=True)
    await stop.wait()
    await sandbox.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__)
    parser.add_argument("--state-dir", type=Path, required=True, help="where ca.pem, settings.json, endpoints.json go")
    parser.add_argument("--seed", type=Path, help="a seed document (JSON) to load at start")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    seed = json.loads(args.seed.read_text()) if args.seed else None
    asyncio.run(_run(args.state_dir, seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
