"""A read-only NBD server over a Unix socket, serving a ``(offset, length) -> bytes`` function.

It lets libguestfs (through QEMU's NBD client) read a recovered disk wherever it lives (an
EBS snapshot, a page blob, a file) without copying it first: a qcow2 overlay backed by the
export takes every write. Fixed-newstyle handshake (``NBD_OPT_GO``/``INFO``/``EXPORT_NAME``),
simple replies, READ/FLUSH/DISC; writes are refused with EPERM. One thread per connection.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger("lifeboat.prep")
ReadAt = Callable[[int, int], bytes]

NBDMAGIC, IHAVEOPT, REPLY_MAGIC = 0x4E42444D41474943, 0x49484156454F5054, 0x3E889045565A9
REQUEST_MAGIC, SIMPLE_REPLY_MAGIC = 0x25609513, 0x67446698
FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES = 1, 2
OPT_EXPORT_NAME, OPT_ABORT, OPT_INFO, OPT_GO = 1, 2, 6, 7
REP_ACK, REP_INFO, REP_ERR_UNSUP, REP_ERR_INVALID = 1, 3, 0x80000001, 0x80000003
INFO_EXPORT, INFO_BLOCK_SIZE = 0, 3
CMD_READ, CMD_DISC, CMD_FLUSH = 0, 2, 3
TX_FLAGS = 1 | 2 | 4 | (1 << 8)  # HAS_FLAGS, READ_ONLY, SEND_FLUSH, CAN_MULTI_CONN
EPERM, EIO, EINVAL = 1, 5, 22
MAX_READ = 32 << 20


class _Closed(Exception):
    pass


def _recv(conn: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise _Closed
        data += chunk
    return bytes(data)


def _option_reply(conn: socket.socket, option: int, kind: int, data: bytes = b"") -> None:
    conn.sendall(struct.pack(">QIII", REPLY_MAGIC, option, kind, len(data)) + data)


def _handshake(conn: socket.socket, size: int) -> bool:
    """Negotiate; True when transmission starts."""
    conn.sendall(struct.pack(">QQH", NBDMAGIC, IHAVEOPT, FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES))
    (client_flags,) = struct.unpack(">I", _recv(conn, 4))
    while True:
        magic, option, length = struct.unpack(">QII", _recv(conn, 16))
        data = _recv(conn, length) if length else b""
        if magic != IHAVEOPT:
            return False
        if option == OPT_EXPORT_NAME:
            zeroes = b"" if client_flags & FLAG_NO_ZEROES else bytes(124)
            conn.sendall(struct.pack(">QH", size, TX_FLAGS) + zeroes)
            return True
        if option in (OPT_INFO, OPT_GO):
            if len(data) < 6:
                _option_reply(conn, option, REP_ERR_INVALID)
                continue
            _option_reply(conn, option, REP_INFO, struct.pack(">HQH", INFO_EXPORT, size, TX_FLAGS))
            _option_reply(conn, option, REP_INFO, struct.pack(">HIII", INFO_BLOCK_SIZE, 1, 4096, MAX_READ))
            _option_reply(conn, option, REP_ACK)
            if option == OPT_GO:
                return True
            continue
        if option == OPT_ABORT:
            _option_reply(conn, option, REP_ACK)
            return False
        _option_reply(conn, option, REP_ERR_UNSUP)  # structured replies, meta contexts, TLS…


def _serve(conn: socket.socket, read: ReadAt, size: int) -> None:
    with conn:
        try:
            if not _handshake(conn, size):
                return
            while True:
                magic, _flags, kind, cookie, offset, length = struct.unpack(">IHHQQI", _recv(conn, 28))
                if magic != REQUEST_MAGIC:
                    return
                if kind == CMD_DISC:
                    return
                if kind == CMD_READ:
                    if offset + length > size or length > MAX_READ:
                        conn.sendall(struct.pack(">IIQ", SIMPLE_REPLY_MAGIC, EINVAL, cookie))
                        continue
                    try:
                        data = read(offset, length)
                    except Exception as exc:  # the reader's failure is the client's EIO, not a dead server
                        log.warning("NBD export: read of %d bytes at %d failed: %s", length, offset, exc)
                        conn.sendall(struct.pack(">IIQ", SIMPLE_REPLY_MAGIC, EIO, cookie))
                        continue
                    conn.sendall(struct.pack(">IIQ", SIMPLE_REPLY_MAGIC, 0, cookie) + data)
                elif kind == CMD_FLUSH:
                    conn.sendall(struct.pack(">IIQ", SIMPLE_REPLY_MAGIC, 0, cookie))
                else:
                    if kind == 1:  # WRITE carries its payload: drain it before refusing
                        _recv(conn, length)
                    conn.sendall(struct.pack(">IIQ", SIMPLE_REPLY_MAGIC, EPERM, cookie))
        except (_Closed, ConnectionError, OSError):
            return


@contextmanager
def serve_nbd(read: ReadAt, size: int, socket_path: Path) -> Iterator[str]:
    """Serve ``read`` as a read-only export of ``size`` bytes on ``socket_path`` until exit.

    Yields the export's URI (``nbd+unix:///?socket=…``) for QEMU and libguestfs.
    """
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(socket_path))
    os.chmod(socket_path, 0o600)  # the disk's contents are readable only by this user
    server.listen(8)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=_serve, args=(conn, read, size), daemon=True, name="nbd-export").start()

    thread = threading.Thread(target=accept, daemon=True, name="nbd-accept")
    thread.start()
    try:
        yield f"nbd+unix:///?socket={socket_path}"
    finally:
        stop.set()
        server.close()
        socket_path.unlink(missing_ok=True)
