"""Local sandbox: emulators of Entra ID, Graph, Key Vault, Proofpoint Essentials and the MSP portal (test equipment)."""
