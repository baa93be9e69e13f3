"""Random ids cut from pooled os.urandom draws."""
import threading

from server.ids import RandomIds


def test_ids_are_hex_of_the_asked_width_and_never_repeat_across_draws():
    ids = RandomIds(12, batch=4)
    got = [ids() for _ in range(1000)]
    assert all(len(i) == 24 and int(i, 16) >= 0 for i in got)
    assert len(set(got)) == len(got)


def test_threads_never_get_the_same_id():
    ids, got = RandomIds(8, batch=16), []

    def take():
        got.extend(ids() for _ in range(2000))
    threads = [threading.Thread(target=take) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 8000 == len(set(got))


def test_a_forked_process_never_hands_out_the_ids_its_parent_drew():
    """Writer children are forked from a zygote: a buffer drawn before the fork would give the
    parent and the child the same ids."""
    import os
    ids = RandomIds(8, batch=64)
    ids()  # the buffer holds 63 more
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(w, "".join(ids() for _ in range(63)).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        theirs = f.read()
    os.waitpid(pid, 0)
    ours = "".join(ids() for _ in range(63))
    assert len(theirs) == len(ours) == 63 * 16 and theirs != ours
