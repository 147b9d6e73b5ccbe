"""The I/O-free core: key names, validation rules, the msgpack codec, Lua sources, snapshot
arithmetic and every operation as a generator of command batches. The stores, the CLI and the
exporter are thin shells over it."""
