# The kernels' seeded generator: xoshiro256** and its samplers, inline so that they compile into
# every kernel that cimports them (as fast as in one module). `kernels/_rng.pyx` holds the `Rng`
# class and the ziggurat tables, filled once at its import; each state points at them.
from libc.math cimport exp, fabs, log, pow, sqrt
from libc.stdint cimport int32_t, uint64_t


cdef struct ziggurat_t:
    # Marsaglia & Tsang (2000), 128 layers: k (acceptance bounds), w (widths), f (densities)
    double k[128]
    double w[128]
    double f[128]
    double r  # the base layer's right edge


cdef struct rng_t:
    uint64_t s[4]
    const ziggurat_t* zig


cdef inline uint64_t rotl64(uint64_t x, int k) noexcept nogil:
    return (x << k) | (x >> (64 - k))


cdef inline uint64_t rng_next_u64(rng_t* r) noexcept nogil:
    """The next 64 bits of xoshiro256** (Blackman & Vigna 2018)."""
    cdef uint64_t* s = r.s
    cdef uint64_t result = rotl64(s[1] * 5, 7) * 9
    cdef uint64_t t = s[1] << 17
    s[2] ^= s[0]
    s[3] ^= s[1]
    s[1] ^= s[2]
    s[0] ^= s[3]
    s[2] ^= t
    s[3] = rotl64(s[3], 45)
    return result


cdef inline double rng_uniform(rng_t* r) noexcept nogil:
    """Uniform on [0, 1) with 53 random bits."""
    return (rng_next_u64(r) >> 11) * (1.0 / 9007199254740992.0)


cdef inline double rng_normal(rng_t* r) noexcept nogil:
    """Standard normal by the ziggurat: layer from the low 7 bits, value from the high 32."""
    cdef uint64_t u
    cdef int32_t hz
    cdef int iz
    cdef double x, y
    cdef const ziggurat_t* z = r.zig
    while True:
        u = rng_next_u64(r)
        iz = <int>(u & 127)
        hz = <int32_t>(u >> 32)
        x = hz * z.w[iz]
        if fabs(<double>hz) < z.k[iz]:
            return x
        if iz == 0:  # tail beyond R (Marsaglia 1964)
            while True:
                x = -log(1.0 - rng_uniform(r)) / z.r
                y = -log(1.0 - rng_uniform(r))
                if y + y >= x * x:
                    break
            return z.r + x if hz > 0 else -z.r - x
        if z.f[iz] + rng_uniform(r) * (z.f[iz - 1] - z.f[iz]) < exp(-0.5 * x * x):
            return x


cdef inline double rng_gamma(rng_t* r, double a) noexcept nogil:
    """Gamma(shape=a, scale=1), Marsaglia & Tsang (2000); a < 1 via Gamma(a + 1) * U**(1/a)."""
    cdef double d, c, x, v, u, boost = 1.0
    if a < 1.0:
        boost = pow(1.0 - rng_uniform(r), 1.0 / a)
        a += 1.0
    d = a - 1.0 / 3.0
    c = 1.0 / sqrt(9.0 * d)
    while True:
        x = rng_normal(r)
        v = 1.0 + c * x
        if v <= 0.0:
            continue
        v = v * v * v
        u = 1.0 - rng_uniform(r)
        if u < 1.0 - 0.0331 * x * x * x * x:
            return d * v * boost
        if log(u) < 0.5 * x * x + d * (1.0 - v + log(v)):
            return d * v * boost


cdef inline double rng_beta(rng_t* r, double a, double b) noexcept nogil:
    """Beta(a, b) = Ga / (Ga + Gb)."""
    cdef double x = rng_gamma(r, a)
    cdef double y = rng_gamma(r, b)
    return x / (x + y)


cdef class Rng:
    cdef rng_t state
