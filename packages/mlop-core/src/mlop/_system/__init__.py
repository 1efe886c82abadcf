"""What a run records about the machine it runs on: system metrics, the environment, console output.

Imported by ``mlop._services`` when a run starts, never at ``import mlop`` (psutil and NVML are loaded
lazily inside).
"""
