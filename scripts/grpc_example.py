#!/usr/bin/env python3
"""scripts/grpc_example.py - gRPC through fanoutd, as a user would try it.

    python3 scripts/grpc_example.py [path/to/fanoutd]      (default: build/fanoutd)

Starts a gRPC server (Debian's python3-grpcio, service greet.Greeter with a
unary, a server-streaming and a slow method) and fanoutd in front of it, on
loopback ports chosen free, then calls through fanoutd: a unary call, a
stream of five messages, an error status, and a slow call under a 300 ms
deadline that the server sees cancelled. It prints the access-log lines and
fanoutd_grpc_requests_total, and stops everything it started (by PID).
"""
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures

import grpc

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


cancelled = threading.Event()


def say_hello(request, context):
    return b"hello, " + request


def count(request, context):
    for i in range(5):
        yield b"message %d" % i


def refuse(request, context):
    context.abort(grpc.StatusCode.NOT_FOUND, "no greeting for " + request.decode())


def slow(request, context):
    done = threading.Event()
    context.add_callback(done.set)
    done.wait(30)
    if not context.is_active():
        cancelled.set()
    return b"too late"


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "build", "fanoutd")
    server = grpc.server(futures.ThreadPoolExecutor(8))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("greet.Greeter", {
        "SayHello": grpc.unary_unary_rpc_method_handler(say_hello),
        "Count": grpc.unary_stream_rpc_method_handler(count),
        "Refuse": grpc.unary_unary_rpc_method_handler(refuse),
        "Slow": grpc.unary_unary_rpc_method_handler(slow),
    }),))
    gport = server.add_insecure_port("127.0.0.1:0")
    server.start()
    port, admin = free_port(), free_port()
    tmp = tempfile.mkdtemp(prefix="fanoutd-grpc-")
    conf = os.path.join(tmp, "fanoutd.ini")
    log = os.path.join(tmp, "access.log")
    with open(conf, "w") as f:
        f.write("[server]\nlisten = 127.0.0.1:%d\naccess_log = %s\n"
                "[admin]\nlisten = 127.0.0.1:%d\n"
                "[upstream \"greeter\"]\nurl = http://127.0.0.1:%d\n"
                "http2 = prior-knowledge\n"
                "[route \"greeter\"]\nmatch = /greet.Greeter/\nupstreams = greeter\n"
                % (port, log, admin, gport))
    print("fanoutd on 127.0.0.1:%d in front of a gRPC server on 127.0.0.1:%d" % (port, gport))
    fd = subprocess.Popen([binary, "-c", conf])
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if fd.poll() is not None:
                    sys.exit("fanoutd exited with %d" % fd.returncode)
                time.sleep(0.05)    # waiting for the listener, bounded above
        ch = grpc.insecure_channel("127.0.0.1:%d" % port)
        print("SayHello:", ch.unary_unary("/greet.Greeter/SayHello")(b"world", timeout=10))
        print("Count:   ", list(ch.unary_stream("/greet.Greeter/Count")(b"", timeout=10)))
        try:
            ch.unary_unary("/greet.Greeter/Refuse")(b"nobody", timeout=10)
        except grpc.RpcError as e:
            print("Refuse:   %s %r" % (e.code().name, e.details()))
        t0 = time.monotonic()
        try:
            ch.unary_unary("/greet.Greeter/Slow")(b"", timeout=0.3)
        except grpc.RpcError as e:
            cancelled.wait(10)
            print("Slow:     %s after %.0f ms; the server saw its call cancelled: %s"
                  % (e.code().name, (time.monotonic() - t0) * 1000, cancelled.is_set()))
        ch.close()
        lines = []
        for _ in range(100):    # the last line is written after its answer
            with open(log) as f:
                lines = f.read().splitlines()
            if len(lines) >= 4:
                break
            time.sleep(0.05)
        print("\naccess log:")
        for line in lines:
            print("  " + line)
        metrics = subprocess.run(["curl", "-s", "http://127.0.0.1:%d/metrics" % admin],
                                 capture_output=True, text=True).stdout
        print("\n" + "\n".join(l for l in metrics.splitlines()
                               if l.startswith("fanoutd_grpc_requests_total")))
    finally:
        fd.terminate()
        fd.wait(30)
        server.stop(0)


if __name__ == "__main__":
    main()
