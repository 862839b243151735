"""One file per schema revision; revision ``000N`` is ``SCHEMA_VERSION`` N."""
