"""STATUS queries: ask participants for their STATE (harness.status, the runner); and for their
compaction marks (a rejoining participant, harness.node.rejoin)."""

from __future__ import annotations

import asyncio
import os
import ssl as _ssl

from harness.node.address import READ_CHUNK
from harness.node.timing import STATUS_TIMEOUT
from harness.node.tls import is_member
from harness.protocol.messages import DecodeError, Marked, Marks, State, Status, decode, encode


async def query_status(
    address: tuple[str, int], timeout: float = STATUS_TIMEOUT, ssl: _ssl.SSLContext | None = None
) -> State:
    """Ask one participant for its STATE (over TLS with ``ssl``). Raises OSError or TimeoutError if it
    cannot be reached or does not answer, ValueError if it answers nonsense or, over TLS, if
    its certificate is not the member's at that address."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(*address, limit=READ_CHUNK, ssl=ssl)
        try:
            if not is_member(writer, f"{address[0]}:{address[1]}"):  # another's certificate (harness.node.tls)
                raise ValueError(f"its certificate is not member {address[0]}:{address[1]}'s")
            writer.write(encode(Status()))
            await writer.drain()
            line = await reader.readline()
        finally:
            writer.close()
    if not line:
        raise ConnectionError("closed the connection without answering")
    try:
        msg = decode(line)
    except DecodeError as e:
        raise ValueError(f"bad STATE reply: {e}") from None
    if not isinstance(msg, State):
        raise ValueError(f"answered {msg.kind.value} to STATUS")
    return msg


async def query_marks(
    address: tuple[str, int], timeout: float = STATUS_TIMEOUT, ssl: _ssl.SSLContext | None = None
) -> dict[str, int]:
    """Every high-water mark of one participant (MARKS, page after page on one
    connection). Raises OSError or TimeoutError if it cannot be reached or
    does not answer, ValueError if it answers nonsense."""
    marks: dict[str, int] = {}
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(*address, limit=READ_CHUNK, ssl=ssl)
        try:
            after = ""
            while True:
                writer.write(encode(Marks(after=after)))
                await writer.drain()
                line = await reader.readline()
                if not line:
                    raise ConnectionError("closed the connection without answering")
                try:
                    msg = decode(line)
                except DecodeError as e:
                    raise ValueError(f"bad MARKED reply: {e}") from None
                if not isinstance(msg, Marked):
                    raise ValueError(f"answered {msg.kind.value} to MARKS")
                marks.update(msg.marks)
                if not msg.more or not msg.marks:
                    return marks
                after = msg.marks[-1][0]
        finally:
            writer.close()


async def query_all(
    addresses: list[tuple[str, int]], timeout: float = STATUS_TIMEOUT, ssl: _ssl.SSLContext | None = None
) -> list[State | str]:
    """STATE of every participant, or the error (as text) for those that failed."""

    async def one(address: tuple[str, int]) -> State | str:
        try:
            return await query_status(address, timeout, ssl)
        except TimeoutError:
            return f"no answer in {timeout}s"
        except OSError as e:  # "[Errno 111] Connect call failed (...)" says less than "Connection refused"
            return os.strerror(e.errno) if e.errno else str(e) or type(e).__name__
        except ValueError as e:
            return str(e) or type(e).__name__

    return list(await asyncio.gather(*(one(a) for a in addresses)))
