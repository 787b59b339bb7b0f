"""Source mappings: raw audit-log records (Okta, Zoom, a legal register...) -> contract events.

No platform emits modwatch's event contract; a mapping file says, as data, how one source's records
become contract events (format: docs/inputs.md). This layer sits on ``core`` and ``config`` and is
used by ``offline`` (``modwatch normalize``), ``live`` and the CLI. The whole public API:

Load mappings (errors are ``ConfigError`` naming file, mapping and field)::

    from streams.inputs import load_mappings, resolve_inputs_dir
    mappings = load_mappings(resolve_inputs_dir(None))      # {id: Mapping}; --inputs DIR, ./config/inputs, bundled

Map a record (never raises; each outcome is Mapped, Dropped or Rejected)::

    for outcome in mappings["okta"].map(record, input_name="okta"):
        if isinstance(outcome, Mapped):
            outcome.event, outcome.decoded, outcome.line  # built dict, decode()'s Decoded, sorted JSON

Read a raw file (files are opened by ``streams.offline.logio.iter_lines``, a layer above)::

    for raw in records(iter_lines([path]), mapping.format):   # RawRecord(path, number, raw, record, error)

Run fixtures (``modwatch inputs test``)::

    results = run_fixtures(directory, mappings, ids=None)  # [CaseResult(mapping, name, problems)]; .ok
"""

from streams.inputs.fixtures import CaseResult, run_fixtures
from streams.inputs.loader import bundled_inputs_dir, load_mapping, load_mappings, resolve_inputs_dir
from streams.inputs.mapping import Dropped, Mapped, Mapping, Outcome, Rejected
from streams.inputs.reader import RawRecord, records

__all__ = [
    "CaseResult",
    "Dropped",
    "Mapped",
    "Mapping",
    "Outcome",
    "RawRecord",
    "Rejected",
    "bundled_inputs_dir",
    "load_mapping",
    "load_mappings",
    "records",
    "resolve_inputs_dir",
    "run_fixtures",
]
