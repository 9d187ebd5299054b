#!/usr/bin/env python3
"""A WebSocket behaviour server for wdsync's WebSocket interop tests (Python `websockets`).

Usage: ws_server.py [--compression none|default|nct] [--tls CERT KEY]
Listens on 127.0.0.1 with an ephemeral port and prints "PORT <n>" on stdout. Exits when
stdin is closed (so it never outlives the test process).

Every message not starting with "cmd:" is echoed with its type. Commands (text messages):
  cmd:fragments N SIZE      one text message in N fragments of SIZE characters
  cmd:binfragments N SIZE   one binary message in N fragments of SIZE bytes
  cmd:large SIZE            one binary message of SIZE bytes, byte j = j % 251
  cmd:ping PAYLOAD          ping with PAYLOAD, wait for the pong (5 s), answer "pong-ok"/"pong-timeout"
  cmd:close CODE REASON     close the connection with CODE and REASON
  cmd:headers               answer with the request headers as JSON
  cmd:extensions            answer with the response's Sec-WebSocket-Extensions ("" if none)
  cmd:raw HEX               write raw bytes on the connection (to send invalid frames)
  cmd:closeinfo TAG         the close code and reason seen on the connection opened at
                            path /tagged/TAG: "CODE REASON" (waits up to 5 s for it to end)
Paths: /notfound answers 404; /plain answers 200 without upgrading; /badext answers 101 with
an extension parameter the client did not offer.
"""
import asyncio
import json
import os
import ssl
import sys
import threading
from http import HTTPStatus

from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory

closes = {}


def process_request(connection, request):
    if request.path == "/notfound":
        return connection.respond(HTTPStatus.NOT_FOUND, "no WebSocket here\n")
    if request.path == "/plain":
        return connection.respond(HTTPStatus.OK, "plain HTTP\n")
    return None


def process_response(connection, request, response):
    if request.path == "/badext":
        response.headers["Sec-WebSocket-Extensions"] = "permessage-deflate; mystery_param=1"
    return None


async def handler(ws):
    path = ws.request.path
    try:
        async for message in ws:
            if isinstance(message, str) and message.startswith("cmd:"):
                await command(ws, message[4:])
            else:
                await ws.send(message)
    except ConnectionClosed:
        pass
    finally:
        if path.startswith("/tagged/"):
            closes[path[len("/tagged/"):]] = (ws.close_code, ws.close_reason)


async def command(ws, line):
    name, _, rest = line.partition(" ")
    args = rest.split(" ") if rest else []
    if name == "fragments":
        n, size = int(args[0]), int(args[1])
        parts = [(chr(ord("a") + i % 26) * (size - 1)) + "é" for i in range(n)]
        await ws.send(parts)
    elif name == "binfragments":
        n, size = int(args[0]), int(args[1])
        await ws.send([bytes((i * 7 + j) % 256 for j in range(size)) for i in range(n)])
    elif name == "large":
        size = int(args[0])
        await ws.send(bytes(j % 251 for j in range(size)))
    elif name == "ping":
        waiter = await ws.ping(rest.encode())
        try:
            await asyncio.wait_for(waiter, 5)
            await ws.send("pong-ok")
        except asyncio.TimeoutError:
            await ws.send("pong-timeout")
    elif name == "close":
        await ws.close(int(args[0]), " ".join(args[1:]))
    elif name == "headers":
        await ws.send(json.dumps({k: v for k, v in ws.request.headers.raw_items()}))
    elif name == "extensions":
        await ws.send(ws.response.headers.get("Sec-WebSocket-Extensions", ""))
    elif name == "raw":
        ws.transport.write(bytes.fromhex(rest))
    elif name == "closeinfo":
        for _ in range(500):
            if rest in closes:
                code, reason = closes[rest]
                await ws.send(f"{code} {reason}")
                return
            await asyncio.sleep(0.01)
        await ws.send("unknown")
    else:
        await ws.send("unknown command " + name)


async def main():
    mode = "default"
    tls = None
    argv = sys.argv[1:]
    while argv:
        if argv[0] == "--compression":
            mode = argv[1]
            argv = argv[2:]
        elif argv[0] == "--tls":
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(argv[1], argv[2])
            argv = argv[3:]
        else:
            raise SystemExit("unknown argument " + argv[0])
    kwargs = dict(process_request=process_request, process_response=process_response,
                  max_size=None, ping_interval=None, close_timeout=5)
    if mode == "none":
        kwargs["compression"] = None
    elif mode == "nct":
        kwargs["compression"] = None
        kwargs["extensions"] = [ServerPerMessageDeflateFactory(
            server_no_context_takeover=True, client_no_context_takeover=True,
            server_max_window_bits=10, client_max_window_bits=9)]
    if tls is not None:
        kwargs["ssl"] = tls
    async with serve(handler, "127.0.0.1", 0, **kwargs) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"PORT {port}", flush=True)
        await asyncio.get_running_loop().create_future()


def exit_when_stdin_closes():
    sys.stdin.read()
    os._exit(0)


if __name__ == "__main__":
    threading.Thread(target=exit_when_stdin_closes, daemon=True).start()
    asyncio.run(main())
