"""Imported first by the package: run as `python -m clients ...` (sys.argv[0] is "-m" while the
package is being imported to run it), gRPC's C-core logs only errors, as documented for its
default, so the CLI's one `error:` line is not preceded by its INFO lines (`I1205 ...
ssl_transport_security.cc:2563] Handshake failed ...` for a TLS flag against a plaintext
server). GRPC_VERBOSITY is read when grpc is imported: an explicit one is kept.

Run as `python -m clients` itself, a Ctrl-C while the package and gRPC load (half a second or
more) ends the command with the CLI's one line, `error: interrupted`, exit 130, instead of a
KeyboardInterrupt traceback through the imports; `__main__.run` puts Python's own handler
back before the command runs (`loaded`)."""
import os
import signal
import sys

__all__ = ["loaded"]

if sys.argv[:1] == ["-m"]:
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


def _interrupted_while_loading(signum, frame) -> None:
    os.write(2, b"error: interrupted\n")
    os._exit(130)  # nothing is under way yet: no file written, no call made


def _run_as_cli() -> bool:
    """Whether this process is `python -m clients ...` (not `-m training`, which imports it)."""
    argv = getattr(sys, "orig_argv", [])
    return sys.argv[:1] == ["-m"] and "-m" in argv and argv[argv.index("-m") + 1:][:1] == ["clients"]


if _run_as_cli() and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
    signal.signal(signal.SIGINT, _interrupted_while_loading)  # one ignored (a background job) stays so


def loaded() -> None:
    """The CLI has loaded: Ctrl-C raises KeyboardInterrupt again (the command says what it had
    done before it)."""
    if signal.getsignal(signal.SIGINT) is _interrupted_while_loading:
        signal.signal(signal.SIGINT, signal.default_int_handler)
