"""PBT's decisions: search spaces, the population, exploit/explore strategies, the schedulers.

Pure logic: no torch, no I/O (a test checks the imports). Reports go in, decisions come
out; the engine turns them into training and storage.
"""
