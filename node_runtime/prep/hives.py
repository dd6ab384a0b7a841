"""Windows registry hives read and written with hivex, on local copies of the hive files.

Key paths are relative to the hive's root, ``\\``-separated (``ControlSet001\\Services\\viostor``)
and, like Windows, case-insensitive. Values decode to ``int`` (DWORD/QWORD), ``str`` (SZ,
EXPAND_SZ), ``list[str]`` (MULTI_SZ) or ``bytes`` (anything else). A :class:`Hive` opened with
``write=True`` changes only in memory until :meth:`Hive.commit`.
"""

from __future__ import annotations

import struct
from typing import Any

from node_runtime.prep.models import RegistryType
from shared.errors import GuestPrepError

RegValue = int | str | list[str] | bytes

REG_SZ, REG_EXPAND_SZ, REG_BINARY, REG_DWORD, REG_DWORD_BE, REG_MULTI_SZ, REG_QWORD = 1, 2, 3, 4, 5, 7, 11
TYPE_CODES: dict[RegistryType, int] = {"sz": REG_SZ, "expand_sz": REG_EXPAND_SZ, "dword": REG_DWORD,
                                       "multi_sz": REG_MULTI_SZ}  # fmt: skip


def _hivex() -> Any:
    try:
        import hivex
    except ImportError as exc:  # Debian-only binding (python3-hivex), linked in by tools/debian_modules.py
        raise GuestPrepError(
            "reading Windows registry hives needs hivex' Python binding (python3-hivex)"
        ) from exc
    return hivex


def _utf16(text: str) -> bytes:
    return text.encode("utf-16-le") + b"\0\0"


def encode(value_type: RegistryType, value: int | str | list[str]) -> tuple[int, bytes]:
    """(hivex type code, data bytes) of a value of ``value_type``."""
    if value_type == "dword":
        if not isinstance(value, int):
            raise ValueError(f"a dword needs an int, not {value!r}")
        return REG_DWORD, struct.pack("<I", value & 0xFFFFFFFF)
    if value_type == "multi_sz":
        if not isinstance(value, list):
            raise ValueError(f"a multi_sz needs a list of strings, not {value!r}")
        return REG_MULTI_SZ, b"".join(_utf16(item) for item in value) + b"\0\0"
    if not isinstance(value, str):
        raise ValueError(f"a {value_type} needs a string, not {value!r}")
    return TYPE_CODES[value_type], _utf16(value)


def decode(type_code: int, data: bytes) -> RegValue:
    """A value's data as Python: DWORDs and QWORDs as int, strings as str, MULTI_SZ as list."""
    if type_code == REG_DWORD and len(data) >= 4:
        return int(struct.unpack_from("<I", data)[0])
    if type_code == REG_DWORD_BE and len(data) >= 4:
        return int(struct.unpack_from(">I", data)[0])
    if type_code == REG_QWORD and len(data) >= 8:
        return int(struct.unpack_from("<Q", data)[0])
    if type_code in (REG_SZ, REG_EXPAND_SZ):
        return _text(data).split("\0", 1)[0]
    if type_code == REG_MULTI_SZ:
        return [item for item in _text(data).split("\0") if item]
    return data


def _text(data: bytes) -> str:
    return data[: len(data) & ~1].decode("utf-16-le", "replace")


class Hive:
    """One hive file opened with hivex; raises GuestPrepError naming the file when hivex fails."""

    def __init__(self, local_path: str, *, write: bool = False, label: str = "") -> None:
        self.label = label or local_path
        try:
            self.h = _hivex().Hivex(local_path, write=write)
        except RuntimeError as exc:
            raise GuestPrepError(f"opening the registry hive {self.label}: {exc}") from exc

    def node(self, key: str) -> int | None:
        """The node of ``key`` (case-insensitive), or None when a part of it does not exist."""
        node: int = self.h.root()
        for part in _parts(key):
            child = self.h.node_get_child(node, part)
            if not child:
                return None
            node = child
        return node

    def subkeys(self, key: str) -> list[str]:
        node = self.node(key)
        return [] if node is None else sorted(self.h.node_name(child) for child in self.h.node_children(node))

    def values(self, key: str) -> dict[str, RegValue]:
        """Every value of ``key`` by name (the default value is ``""``); empty when it does not exist."""
        node = self.node(key)
        if node is None:
            return {}
        found: dict[str, RegValue] = {}
        for value in self.h.node_values(node):
            type_code, data = self.h.value_value(value)
            found[self.h.value_key(value)] = decode(type_code, data)
        return found

    def get(self, key: str, name: str) -> RegValue | None:
        wanted = name.lower()
        return next((v for n, v in self.values(key).items() if n.lower() == wanted), None)

    def set(self, key: str, name: str, value_type: RegistryType, value: int | str | list[str]) -> None:
        """Set ``key``\\``name``, creating the missing keys of the path."""
        node = self._ensure(key)
        type_code, data = encode(value_type, value)
        try:
            self.h.node_set_value(node, {"key": name, "t": type_code, "value": data})
        except RuntimeError as exc:
            raise GuestPrepError(f"setting {key}\\{name} in {self.label}: {exc}") from exc

    def delete(self, key: str, name: str | None) -> None:
        """Delete value ``name`` of ``key`` (the whole key and its subkeys when ``name`` is None)."""
        node = self.node(key)
        if node is None:
            return
        try:
            if name is None:
                self.h.node_delete_child(node)
                return
            kept = [(self.h.value_key(v), *self.h.value_value(v)) for v in self.h.node_values(node)]
            self.h.node_set_values(node, [{"key": k, "t": t, "value": d} for k, t, d in kept
                                          if k.lower() != name.lower()])  # fmt: skip
        except RuntimeError as exc:
            raise GuestPrepError(f"deleting {key}\\{name or ''} in {self.label}: {exc}") from exc

    def commit(self, local_path: str) -> None:
        try:
            self.h.commit(local_path)
        except RuntimeError as exc:
            raise GuestPrepError(f"writing the registry hive {self.label}: {exc}") from exc

    def _ensure(self, key: str) -> int:
        node: int = self.h.root()
        for part in _parts(key):
            child = self.h.node_get_child(node, part)
            if not child:
                try:
                    child = self.h.node_add_child(node, part)
                except RuntimeError as exc:
                    raise GuestPrepError(f"creating {key} in {self.label}: {exc}") from exc
            node = child
        return node


def _parts(key: str) -> list[str]:
    return [part for part in key.split("\\") if part]
