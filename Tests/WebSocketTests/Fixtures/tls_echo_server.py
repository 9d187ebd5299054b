#!/usr/bin/env python3
"""A TLS echo server for wdsync's TLSStream tests (Python's ssl module).

Usage: tls_echo_server.py CERT KEY
Listens on 127.0.0.1 with an ephemeral port, prints "PORT <n>", echoes every connection's
bytes back. Failed handshakes (the client rejecting our certificate) are ignored. Exits when
stdin is closed.

Two lines are commands, not echoed: "TRUNCATE" sends "partial" and cuts the TCP connection
without a TLS close_notify; "CLOSE" sends "bye" and ends the TLS session cleanly (close_notify).
"""
import os
import socket
import ssl
import sys
import threading


def serve_one(ctx, raw):
    try:
        raw.settimeout(10)
        conn = ctx.wrap_socket(raw, server_side=True)
        conn.settimeout(None)
        with conn:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                if data == b"TRUNCATE\n":
                    conn.sendall(b"partial")
                    socket.socket.shutdown(conn, socket.SHUT_RDWR)  # under TLS: no close_notify
                    return
                if data == b"CLOSE\n":
                    conn.sendall(b"bye")
                    conn.unwrap()
                    return
                conn.sendall(data)
    except (OSError, ssl.SSLError):
        raw.close()


def main():
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(sys.argv[1], sys.argv[2])
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    print(f"PORT {listener.getsockname()[1]}", flush=True)
    while True:
        raw, _ = listener.accept()
        threading.Thread(target=serve_one, args=(ctx, raw), daemon=True).start()


def exit_when_stdin_closes():
    sys.stdin.read()
    os._exit(0)


if __name__ == "__main__":
    threading.Thread(target=exit_when_stdin_closes, daemon=True).start()
    main()
