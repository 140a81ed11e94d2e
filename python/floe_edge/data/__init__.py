"""Personal data in the section 9 format (DESIGN.md): the record, strict reading and writing, and a seeded
generator of several users' private worlds for the paper's three tasks."""

from __future__ import annotations

from .personal import TEMPLATES, GeneratedData, generate, needs_both
from .records import (FIELDS, TASKS, DataError, Record, cloud_input, edge_input, read_dataset, read_records,
                      write_records)

__all__ = ["DataError", "Record", "FIELDS", "TASKS", "edge_input", "cloud_input", "read_records", "read_dataset",
           "write_records", "generate", "GeneratedData", "TEMPLATES", "needs_both"]
