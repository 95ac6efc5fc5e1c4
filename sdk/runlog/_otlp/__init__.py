"""The OpenTelemetry bridge: the ``events`` table as OTLP traces (``runlog export otlp``).

``_mapping`` is pure (events to spans, no OpenTelemetry import); ``_export`` does the
I/O with OpenTelemetry's own OTLP/HTTP exporter, the ``runlog[otlp]`` extra, imported
only when something is sent.  ``import runlog`` imports neither.
"""
