"""torchrun on one node, with every socket on the loopback address.

    python -m admin_fairseq.local_torchrun --nproc-per-node 2 -m admin_fairseq.launch ...

``torchrun --standalone`` (and torchrun's static rendezvous) starts its key-value store on
every network interface of the machine: a run of several workers on one node would take
connections from the whole network. Here the store is started first, on a socket bound to
127.0.0.1, and torchrun is run in the same process with ``--master-addr 127.0.0.1`` and
that port: torchrun's store, made with ``multi_tenant=True``, is then the one already
listening on the loopback address. The workers (gloo and NCCL bootstrap) connect to it
there. Runs over several nodes still listen on the interface the user names
(``--master-addr``), through torchrun itself.
"""

import socket
import sys


def main(argv=None):
    from torch.distributed import TCPStore
    from torch.distributed import run as torchrun

    argv = list(sys.argv[1:] if argv is None else argv)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    port = listener.getsockname()[1]
    # the store owns the socket from here on (it closes it), and is kept referenced until
    # torchrun returns: it serves the whole run
    store = TCPStore("127.0.0.1", port, None, True, multi_tenant=True, wait_for_workers=False,
                     master_listen_fd=listener.detach())  # fmt: skip
    try:
        torchrun.main(["--nnodes", "1", "--node-rank", "0", "--master-addr", "127.0.0.1",
                       "--master-port", str(port), *argv])  # fmt: skip
    finally:
        del store
    return 0


if __name__ == "__main__":
    sys.exit(main())
