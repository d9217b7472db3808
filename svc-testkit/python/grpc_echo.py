"""A grpcio (gRPC C-core) server and client for svc's end-to-end tests.

grpcio is the reference gRPC implementation most users run, and unlike tonic it enforces the
protocol strictly: a request without `te: trailers` is reset. Messages are raw bytes (no
protoc needed).

    grpc_echo.py serve ADDR            serves /svc.test.Echo/Say, answering ADDR; prints "ready"
    grpc_echo.py call TARGET N         N sequential unary calls on one channel; one line each:
                                       "ok <reply>" or "err <CODE> <details>"
    grpc_echo.py call-fresh TARGET N   the same, with a new channel (connection) per call
"""
import sys
from concurrent import futures

import grpc

METHOD = "/svc.test.Echo/Say"
# No proxy from the environment: the tests talk to loopback addresses only.
OPTIONS = [("grpc.enable_http_proxy", 0)]


def serve(addr):
    def say(request, context):
        return addr.encode()

    handler = grpc.method_handlers_generic_handler(
        "svc.test.Echo", {"Say": grpc.unary_unary_rpc_method_handler(say)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=OPTIONS)
    server.add_generic_rpc_handlers((handler,))
    if server.add_insecure_port(addr) == 0:
        print("error cannot bind " + addr, flush=True)
        sys.exit(1)
    server.start()
    print("ready", flush=True)
    server.wait_for_termination()


def call(channel, n):
    say = channel.unary_unary(METHOD)
    try:
        reply = say(b"svc", timeout=10)
        print("ok " + reply.decode(), flush=True)
    except grpc.RpcError as e:
        details = (e.details() or "").replace("\n", " ")
        print("err %s %s" % (e.code().name, details), flush=True)


def main():
    mode = sys.argv[1]
    if mode == "serve":
        serve(sys.argv[2])
    elif mode == "call":
        with grpc.insecure_channel(sys.argv[2], options=OPTIONS) as channel:
            for _ in range(int(sys.argv[3])):
                call(channel, 1)
    elif mode == "call-fresh":
        for _ in range(int(sys.argv[3])):
            with grpc.insecure_channel(sys.argv[2], options=OPTIONS) as channel:
                call(channel, 1)
    else:
        sys.exit("unknown mode " + mode)


if __name__ == "__main__":
    main()
