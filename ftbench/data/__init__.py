"""Data stage: synthetic raw datasets in the real raw layouts and converters to the common format.

Its modules, each imported by name (this package re-exports nothing, so importing
``ftbench.data.common`` stays cheap): ``common`` (the format), ``synthetic`` (``make_raw``),
``sources`` (``convert_source``: which converter reads which source), ``staging`` (a conversion
validated before it replaces the previous one)."""
