"""Bandit policy kernels: posterior sampling, scores and sufficient-statistic updates.

Everything here works on flat float64 arrays owned by the caller (see `kernels/bandits.py` for
the state layout and the numpy reference of every function). Heavy loops run without the GIL.
Random numbers come from an `Rng` (`kernels/_rng.pxd`: the generator and its samplers).
"""
from libc.math cimport INFINITY, log, sqrt
from libc.stdint cimport uint64_t, uint8_t
from libc.stdlib cimport free, malloc

from kernels._rng cimport Rng, rng_beta, rng_gamma, rng_next_u64, rng_normal, rng_t, rng_uniform
from kernels._splitmix cimport splitmix64_mix
from kernels._types cimport intp_t

# Posterior families understood by the Monte Carlo kernel.
cdef enum:
    KIND_BETA = 0
    KIND_NIG = 1
    KIND_NORMAL = 2


# ----------------------------------------------------------------------------------------------
# Sufficient-statistic updates (exact; the numpy reference must agree bit for bit up to rounding)

cdef inline void _discount(double* v, intp_t m, double gamma) noexcept nogil:
    cdef intp_t i
    if gamma != 1.0:
        for i in range(m):
            v[i] *= gamma


def update_stats(double[::1] n, double[::1] s, double[::1] ss, intp_t arm, double reward,
                 double gamma):
    """In place: discount every arm's (n, s, ss) by `gamma`, then add one pull of `arm`."""
    cdef intp_t k = n.shape[0]
    with nogil:
        _discount(&n[0], k, gamma)
        _discount(&s[0], k, gamma)
        _discount(&ss[0], k, gamma)
        n[arm] += 1.0
        s[arm] += reward
        ss[arm] += reward * reward


def update_linear(double[:, :, ::1] A, double[:, ::1] b, double[::1] n, double[::1] s,
                  double[::1] ss, intp_t arm, double reward, const double[::1] x, double gamma):
    """In place: discount every arm's (A, b, n, s, ss), then A[arm] += x x', b[arm] += r x."""
    cdef intp_t k = A.shape[0], d = A.shape[1], i, j
    with nogil:
        _discount(&A[0, 0, 0], k * d * d, gamma)
        _discount(&b[0, 0], k * d, gamma)
        _discount(&n[0], k, gamma)
        _discount(&s[0], k, gamma)
        _discount(&ss[0], k, gamma)
        for i in range(d):
            b[arm, i] += reward * x[i]
            for j in range(d):
                A[arm, i, j] += x[i] * x[j]
        n[arm] += 1.0
        s[arm] += reward
        ss[arm] += reward * reward


# ----------------------------------------------------------------------------------------------
# Deterministic policies: UCB1 and epsilon-greedy (exact propensities, ties split uniformly)

cdef inline intp_t _pick_max(const double* score, intp_t k, rng_t* r, double* probs) noexcept nogil:
    """Uniform choice among the maxima of `score`; probs[i] = 1/#ties on the maxima, else 0."""
    cdef intp_t i, ties = 0, pick
    cdef double best = -INFINITY
    for i in range(k):
        if score[i] > best:
            best = score[i]
    for i in range(k):
        if score[i] == best:
            ties += 1
    pick = <intp_t>(rng_next_u64(r) % <uint64_t>ties) if ties > 1 else 0
    cdef intp_t chosen = -1
    for i in range(k):
        if score[i] == best:
            probs[i] = 1.0 / ties
            if pick == 0 and chosen < 0:
                chosen = i
            pick -= 1
        else:
            probs[i] = 0.0
    return chosen


cdef inline void _ucb1_scores(const double* n, const double* s, intp_t k, double c,
                              double* out) noexcept nogil:
    cdef intp_t i
    cdef double t = 0.0
    for i in range(k):
        t += n[i]
    cdef double logt = log(t) if t > 1.0 else 0.0
    for i in range(k):
        if n[i] > 0.0:
            out[i] = s[i] / n[i] + c * sqrt(2.0 * logt / n[i])
        else:
            out[i] = INFINITY


def ucb1_scores(const double[::1] n, const double[::1] s, double c, double[::1] out):
    """UCB1 index mean + c*sqrt(2 ln(sum n) / n_i); untried arms score +inf."""
    with nogil:
        _ucb1_scores(&n[0], &s[0], n.shape[0], c, &out[0])


def ucb1_choose(const double[::1] n, const double[::1] s, double c, Rng rng, double[::1] probs):
    """Arm with the largest UCB1 index (ties split uniformly); `probs` gets exact propensities."""
    cdef intp_t k = n.shape[0], arm
    cdef double* buf = <double*>malloc(k * sizeof(double))
    with nogil:
        _ucb1_scores(&n[0], &s[0], k, c, buf)
        arm = _pick_max(buf, k, &rng.state, &probs[0])
    free(buf)
    return arm


def egreedy_choose(const double[::1] n, const double[::1] s, double eps, Rng rng,
                   double[::1] probs):
    """Greedy arm w.p. 1 - eps (untried arms count as +inf), uniform arm w.p. eps.

    `probs[i]` = (1 - eps) / #greedy (if greedy) + eps / K: the exact choice probabilities.
    """
    cdef intp_t k = n.shape[0], i, arm
    cdef double* buf = <double*>malloc(k * sizeof(double))
    with nogil:
        for i in range(k):
            buf[i] = s[i] / n[i] if n[i] > 0.0 else INFINITY
        arm = _pick_max(buf, k, &rng.state, &probs[0])
        for i in range(k):
            probs[i] = (1.0 - eps) * probs[i] + eps / k
        if rng_uniform(&rng.state) < eps:
            arm = <intp_t>(rng_next_u64(&rng.state) % <uint64_t>k)
    free(buf)
    return arm


# ----------------------------------------------------------------------------------------------
# Linear policies: one Cholesky per arm, z = L^-1 x, y = L^-1 b -> mean = y.z, var = z.z

cdef int _lin_moments(const double* A, const double* b, const double* x, intp_t d, double lam,
                      double* L, double* z, double* y, double* mean, double* var) noexcept nogil:
    """Mean x'theta and variance x'(A + lam I)^-1 x of one arm; returns -1 if not pos. def."""
    cdef intp_t i, j, m
    cdef double acc
    for i in range(d):
        for j in range(i + 1):
            acc = A[i * d + j] + (lam if i == j else 0.0)
            for m in range(j):
                acc -= L[i * d + m] * L[j * d + m]
            if i == j:
                if acc <= 0.0:
                    return -1
                L[i * d + i] = sqrt(acc)
            else:
                L[i * d + j] = acc / L[j * d + j]
    for i in range(d):
        acc = x[i]
        for m in range(i):
            acc -= L[i * d + m] * z[m]
        z[i] = acc / L[i * d + i]
        acc = b[i]
        for m in range(i):
            acc -= L[i * d + m] * y[m]
        y[i] = acc / L[i * d + i]
    mean[0] = 0.0
    var[0] = 0.0
    for i in range(d):
        mean[0] += y[i] * z[i]
        var[0] += z[i] * z[i]
    return 0


cdef int _lin_all(const double[:, :, ::1] A, const double[:, ::1] b, const double[::1] x,
                  double lam, double* mean, double* var) noexcept nogil:
    cdef intp_t k = A.shape[0], d = A.shape[1], a
    cdef int rc = 0
    cdef double* work = <double*>malloc((d * d + 2 * d) * sizeof(double))
    for a in range(k):
        if _lin_moments(&A[a, 0, 0], &b[a, 0], &x[0], d, lam, work, work + d * d,
                        work + d * d + d, &mean[a], &var[a]) != 0:
            rc = -1
            break
    free(work)
    return rc


def linear_moments(const double[:, :, ::1] A, const double[:, ::1] b, const double[::1] x,
                   double lam, double[::1] mean, double[::1] var):
    """Per arm: theta_a = (A_a + lam I)^-1 b_a, mean_a = x'theta_a, var_a = x'(A_a + lam I)^-1 x."""
    cdef int rc
    with nogil:
        rc = _lin_all(A, b, x, lam, &mean[0], &var[0])
    if rc != 0:
        raise ValueError("A + lam*I is not positive definite for some arm")


def linucb_choose(const double[:, :, ::1] A, const double[:, ::1] b, const double[::1] x,
                  double lam, double alpha, Rng rng, double[::1] probs):
    """LinUCB: argmax of mean + alpha*sqrt(var) (ties split); `probs` gets exact propensities."""
    cdef intp_t k = A.shape[0], a, arm
    cdef int rc
    cdef double* buf = <double*>malloc(2 * k * sizeof(double))
    with nogil:
        rc = _lin_all(A, b, x, lam, buf, buf + k)
        if rc == 0:
            for a in range(k):
                buf[a] = buf[a] + alpha * sqrt(buf[k + a])
            arm = _pick_max(buf, k, &rng.state, &probs[0])
    free(buf)
    if rc != 0:
        raise ValueError("A + lam*I is not positive definite for some arm")
    return arm


# ----------------------------------------------------------------------------------------------
# Thompson sampling: one posterior draw decides; n_mc more draws estimate P(arm is argmax)

cdef inline void _draw(int kind, const double* p, intp_t k, rng_t* r, double* out) noexcept nogil:
    """One joint posterior draw of the K arm means. `p` is a (4, K) row-major parameter block."""
    cdef intp_t i
    cdef double tau
    if kind == KIND_BETA:
        for i in range(k):
            out[i] = rng_beta(r, p[i], p[k + i])
    elif kind == KIND_NIG:
        # p = (mu_n, kappa_n, a_n, b_n): tau ~ Gamma(a_n, rate b_n), mu ~ N(mu_n, 1/(kappa_n tau))
        for i in range(k):
            tau = rng_gamma(r, p[2 * k + i]) / p[3 * k + i]
            out[i] = p[i] + rng_normal(r) / sqrt(p[k + i] * tau)
    else:
        for i in range(k):
            out[i] = p[i] + p[k + i] * rng_normal(r)


cdef inline intp_t _argmax(const double* v, intp_t k) noexcept nogil:
    cdef intp_t i, best = 0
    for i in range(1, k):
        if v[i] > v[best]:
            best = i
    return best


cdef void _mc(int kind, const double* p, intp_t k, rng_t* r, intp_t n_mc, double* buf,
              double* wins, double* loss) noexcept nogil:
    """Add argmax counts to `wins` and sum(max - draw) to `loss` (if not NULL) over n_mc draws."""
    cdef intp_t _it, i, best
    for _it in range(n_mc):
        _draw(kind, p, k, r, buf)
        best = _argmax(buf, k)
        wins[best] += 1.0
        if loss != NULL:
            for i in range(k):
                loss[i] += buf[best] - buf[i]


def ts_choose(int kind, const double[:, ::1] params, Rng rng, intp_t n_mc, double[::1] probs):
    """Thompson decision: argmax of one posterior draw.

    Parameters
    ----------
    kind : int
        0 Beta(p[0], p[1]); 1 Normal-inverse-gamma (mu, kappa, a, b); 2 Normal(p[0], sd=p[1]).
    params : (4, K) float64
        Posterior parameters per arm (rows unused by a family are ignored).
    n_mc : int
        Extra draws for the propensity estimate. With n_mc = 0 `probs` is left untouched.
    probs : (K,) float64
        Out: (wins + decision one-hot) / (n_mc + 1), so every chosen arm has propensity
        >= 1 / (n_mc + 1) and the vector sums to 1. Standard error sqrt(p (1 - p) / n_mc).

    Returns
    -------
    arm : int
    """
    cdef intp_t k = params.shape[1], i, arm
    cdef double* buf = <double*>malloc(k * sizeof(double))
    with nogil:
        _draw(kind, &params[0, 0], k, &rng.state, buf)
        arm = _argmax(buf, k)
        if n_mc > 0:
            for i in range(k):
                probs[i] = 0.0
            _mc(kind, &params[0, 0], k, &rng.state, n_mc, buf, &probs[0], NULL)
            probs[arm] += 1.0
            for i in range(k):
                probs[i] /= (n_mc + 1.0)
    free(buf)
    return arm


INVERSE_MIN_DRAWS = 256
"""The fewest draws `ts_choose_inverse` may stop at (the fixed count lints used before)."""


def ts_choose_inverse(int kind, const double[:, ::1] params, Rng rng, intp_t wins,
                      intp_t max_samples, double[::1] probs):
    """Thompson decision with an inverse-sampling propensity (contextual Thompson).

    After the decision draw chooses `arm`, more posterior draws are made until `arm` has been
    the argmax `wins` times (N draws in all): wins / N estimates P(arm), and N / wins is an
    exactly unbiased estimate of 1 / P(arm) (negative binomial: E[N] = wins / P), which is the
    weight off-policy estimates use; a fixed number of draws undervalues rare arms
    (E[(n + 1) / (1 + W)] = (1 - (1 - p)^(n + 1)) / p). Expected draws: wins / P(arm), so
    wins * K a decision on average whatever the posterior. At most
    max(max_samples // K, INVERSE_MIN_DRAWS) draws: past that (an arm rarer than about
    wins * K / max_samples) the estimate is (W + 1) / (draws + 1) as `ts_choose`'s, and the
    weight is biased low as said above (never more than 256 fixed draws' was).

    Parameters
    ----------
    kind, params : as `ts_choose`.
    wins : int, >= 1
        Times the chosen arm must win the extra draws.
    max_samples : int
        Most arm values drawn for the estimate (draws * K): bounds the time of one decision.
    probs : (K,) float64
        Out: each arm's share of the extra draws (the chosen arm's: wins / N, or the capped
        estimate); sums to 1.

    Returns
    -------
    (arm, draws) : (int, int)
        The decision and the extra draws made.
    """
    cdef intp_t k = params.shape[1], i, arm, best, n = 0
    cdef intp_t cap = max(max_samples // k, INVERSE_MIN_DRAWS)
    cdef double* buf = <double*>malloc(k * sizeof(double))
    if wins < 1:
        free(buf)
        raise ValueError("wins must be at least 1")
    with nogil:
        _draw(kind, &params[0, 0], k, &rng.state, buf)
        arm = _argmax(buf, k)
        for i in range(k):
            probs[i] = 0.0
        while probs[arm] < wins and n < cap:
            _draw(kind, &params[0, 0], k, &rng.state, buf)
            best = _argmax(buf, k)
            probs[best] += 1.0
            n += 1
        if probs[arm] >= wins:
            for i in range(k):
                probs[i] /= n
        else:  # capped: the decision draw counted in, as `ts_choose` does
            probs[arm] += 1.0
            for i in range(k):
                probs[i] /= (n + 1.0)
    free(buf)
    return arm, n


def beta_ts_choose(const double[::1] n, const double[::1] s, double a0, double b0, Rng rng):
    """Decision-only Bernoulli Thompson step straight from the counts (no propensity, no copy)."""
    cdef intp_t k = n.shape[0], i, best = 0
    cdef double v, top = -1.0
    with nogil:
        for i in range(k):
            v = rng_beta(&rng.state, a0 + s[i], b0 + n[i] - s[i])
            if v > top:
                top = v
                best = i
    return best


def prob_best(int kind, const double[:, ::1] params, Rng rng, intp_t n_mc, double[::1] wins,
              double[::1] loss):
    """Monte Carlo P(arm is best) into `wins` and expected loss E[max - arm] into `loss`."""
    cdef intp_t k = params.shape[1], i
    cdef double* buf = <double*>malloc(k * sizeof(double))
    with nogil:
        for i in range(k):
            wins[i] = 0.0
            loss[i] = 0.0
        _mc(kind, &params[0, 0], k, &rng.state, n_mc, buf, &wins[0], &loss[0])
        for i in range(k):
            wins[i] /= n_mc
            loss[i] /= n_mc
    free(buf)


# ----------------------------------------------------------------------------------------------
# Fixed split: FNV-1a 64 over the bytes, then the splitmix64 finaliser (stable everywhere)

def hash64(const uint8_t[::1] data):
    """FNV-1a 64-bit of `data` followed by the splitmix64 finaliser (avalanche)."""
    cdef uint64_t h = <uint64_t>0xCBF29CE484222325ULL
    cdef intp_t i
    for i in range(data.shape[0]):
        h ^= data[i]
        h *= <uint64_t>0x100000001B3ULL
    return splitmix64_mix(h)
