"""Imported first by the package: run as `python -m clients ...` (sys.argv[0] is "-m" while the
package is being imported to run it), gRPC's C-core logs only errors, as documented for its
default, so the CLI's one `error:` line is not preceded by its INFO lines (`I1205 ...
ssl_transport_security.cc:2563] Handshake failed ...` for a TLS flag against a plaintext
server). GRPC_VERBOSITY is read when grpc is imported: an explicit one is kept."""
import os
import sys

if sys.argv[:1] == ["-m"]:
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
