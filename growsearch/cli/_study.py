"""Opening an existing study's lineage for the read-only commands."""

from __future__ import annotations

from growsearch.exceptions import StorageError
from growsearch.storage_url import check_storage_url, redact
from growsearch.store import SQLLineageStore

__all__ = ["open_store"]


def open_store(url: str, study: str | None) -> SQLLineageStore:
    """The store of an existing database; a mistyped path creates nothing, and an unknown study
    name lists the studies that do exist."""
    check_storage_url(url, must_exist=True)
    store = SQLLineageStore(url, create=False)
    if study is not None and store.get_study(study) is None:
        names = store.list_studies()
        raise StorageError(
            f"no study named '{study}' in {redact(url)}; studies there: "
            f"{', '.join(names) if names else 'none'}"
        )
    return store
