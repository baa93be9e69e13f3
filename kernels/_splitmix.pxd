# splitmix64 (Steele, Lea & Flood 2014; Vigna's public-domain C), shared by every kernel that
# seeds a generator, draws a quick seeded stream or needs a 64-bit avalanche.
from libc.stdint cimport uint64_t


cdef inline uint64_t splitmix64_mix(uint64_t z) noexcept nogil:
    """The splitmix64 finaliser: every output bit depends on every input bit."""
    z = (z ^ (z >> 30)) * <uint64_t>0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * <uint64_t>0x94D049BB133111EBULL
    return z ^ (z >> 31)


cdef inline uint64_t splitmix64(uint64_t* state) noexcept nogil:
    """Advance `state` by the golden-ratio increment and return the mixed value."""
    state[0] += <uint64_t>0x9E3779B97F4A7C15ULL
    return splitmix64_mix(state[0])
