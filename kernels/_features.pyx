# Incremental profile-feature update
# (layout: kernels/feature_layout.py; semantics: kernels/features.py).
from libc.math cimport exp2, floor, isfinite
from libc.stdint cimport int32_t, int64_t, uint8_t

from kernels._types cimport float64_t, intp_t

cdef enum:
    FORMAT = 0
    FINGERPRINT = 1
    REF_TS = 2
    FIRST_TS = 3
    LAST_PURCHASE_TS = 4
    N_EVENTS = 5
    N_RECENT = 6
    TZ_OFFSET_MIN = 7
    MONETARY_ALL = 8
    HEADER_SIZE = 16
    HOURS_PER_WEEK = 168
    EPOCH_HOUR_OF_WEEK = 72
    MAX_HALF_LIVES = 16
    MAX_TZ_OFFSET_MIN = 1440
    FLAG_PURCHASE = 1
    FLAG_ENGAGEMENT = 2
    FLAG_VALUED = 4

cdef double MAX_ITEM_CODE = 9007199254740992.0  # 2**53

HEADER_SLOTS = {
    "FORMAT": FORMAT, "FINGERPRINT": FINGERPRINT, "REF_TS": REF_TS, "FIRST_TS": FIRST_TS,
    "LAST_PURCHASE_TS": LAST_PURCHASE_TS, "N_EVENTS": N_EVENTS, "N_RECENT": N_RECENT,
    "TZ_OFFSET_MIN": TZ_OFFSET_MIN, "MONETARY_ALL": MONETARY_ALL, "HEADER_SIZE": HEADER_SIZE,
}


cdef struct Layout:
    intp_t T, C, K, H, N
    intp_t o_counts, o_decayed, o_money, o_category, o_hour, o_rc_item, o_rc_ts, o_rc_w, o_rc_amt


cdef inline intp_t hour_of_week(double ts, double tz_offset_min) noexcept nogil:
    cdef int64_t h = <int64_t>floor((ts + 60.0 * tz_offset_min) / 3600.0)
    h = (h + EPOCH_HOUR_OF_WEEK) % HOURS_PER_WEEK
    if h < 0:
        h += HOURS_PER_WEEK
    return <intp_t>h


cdef inline void decay_state(float64_t* s, const Layout* L, double dt,
                             const float64_t[::1] inv_hl, double inv_hour_hl) noexcept nogil:
    """Multiply every decayed slot of one state by 2^(-dt/h)."""
    cdef intp_t h, j, TC = L.T * L.C
    cdef double f
    cdef float64_t* p
    for h in range(L.H):
        f = exp2(-dt * inv_hl[h])
        p = s + L.o_decayed + h * TC
        for j in range(TC):
            p[j] *= f
        s[L.o_money + h] *= f
        p = s + L.o_category + h * L.K
        for j in range(L.K):
            p[j] *= f
    f = exp2(-dt * inv_hour_hl)
    p = s + L.o_hour
    for j in range(HOURS_PER_WEEK):
        p[j] *= f


cdef inline void recent_insert(float64_t* s, const Layout* L, double item, double t,
                               intp_t et, double amount) noexcept nogil:
    """Merge (item, t, amount of type et) into the recent-items table (see
    features._reference_recent_insert)."""
    cdef float64_t* codes = s + L.o_rc_item
    cdef float64_t* ts = s + L.o_rc_ts
    cdef float64_t* amt = s + L.o_rc_amt
    cdef intp_t n = <intp_t>s[N_RECENT]
    cdef intp_t j, k
    for j in range(n):
        if codes[j] == item:
            amt[j * L.T + et] += amount
            if t > ts[j]:
                ts[j] = t
            return
    if n < L.N:
        j = n
        s[N_RECENT] = n + 1
    else:
        j = 0
        for k in range(1, n):
            if ts[k] < ts[j]:
                j = k
        if t < ts[j]:
            return
    codes[j] = item
    ts[j] = t
    s[L.o_rc_w + j] = 0.0
    for k in range(L.T):
        amt[j * L.T + k] = 0.0
    amt[j * L.T + et] = amount


def update_many(float64_t[:, ::1] states, const int64_t[::1] rows,
                const int32_t[::1] etype, const int32_t[::1] channel,
                const int64_t[::1] item, const int32_t[::1] category,
                const float64_t[::1] value, const float64_t[::1] ts,
                const int32_t[::1] tz, bint has_tz,
                const float64_t[::1] type_weight, const uint8_t[::1] type_flags,
                const float64_t[::1] inv_hl, double inv_hour_hl,
                const int64_t[::1] dims, const int64_t[::1] offsets,
                float64_t[::1] new_ref, uint8_t[::1] touched):
    """Apply events i (in order) to states[rows[i]] in place.

    Returns (0, -1) on success or (error code, event index) before touching any state; codes are
    mapped to messages by kernels.features. `new_ref` and `touched` are scratch of len(states),
    `touched` zeroed by the caller.
    """
    cdef Layout L
    if dims.shape[0] != 5 or offsets.shape[0] != 9:
        raise ValueError("layout arrays do not match the states")
    L.T, L.C, L.K, L.H, L.N = dims[0], dims[1], dims[2], dims[3], dims[4]
    L.o_counts, L.o_decayed, L.o_money, L.o_category = (
        offsets[0], offsets[1], offsets[2], offsets[3])
    L.o_hour, L.o_rc_item, L.o_rc_ts, L.o_rc_w = offsets[4], offsets[5], offsets[6], offsets[7]
    L.o_rc_amt = offsets[8]
    cdef intp_t n = rows.shape[0], n_states = states.shape[0]
    cdef intp_t i, r, h, et, ch, TC = L.T * L.C
    cdef int code = 0
    cdef double t, dt, w
    cdef double fh[MAX_HALF_LIVES]
    cdef float64_t* s
    if (etype.shape[0] != n or channel.shape[0] != n or item.shape[0] != n
            or category.shape[0] != n or value.shape[0] != n or ts.shape[0] != n
            or (has_tz and tz.shape[0] != n)):
        raise ValueError("events: arrays of unequal length")
    if (L.H > MAX_HALF_LIVES or type_weight.shape[0] != L.T or type_flags.shape[0] != L.T
            or inv_hl.shape[0] != L.H or new_ref.shape[0] != n_states
            or touched.shape[0] != n_states or states.shape[1] != offsets[8] + L.N * L.T):
        raise ValueError("layout arrays do not match the states")

    with nogil:
        # 1. validate everything and find each touched state's new reference time
        for i in range(n):
            r = rows[i]
            if etype[i] < 0 or etype[i] >= L.T:
                code = 1
            elif channel[i] < 0 or channel[i] >= L.C:
                code = 2
            elif category[i] < -1 or category[i] >= L.K:
                code = 3
            elif item[i] < -1 or <double>item[i] >= MAX_ITEM_CODE:
                code = 4
            elif not isfinite(ts[i]):
                code = 5
            elif not isfinite(value[i]):
                code = 6
            elif has_tz and (tz[i] < -MAX_TZ_OFFSET_MIN or tz[i] > MAX_TZ_OFFSET_MIN):
                code = 7
            elif r < 0 or r >= n_states:
                code = 8
            if code:
                break
            if not touched[r]:
                touched[r] = 1
                new_ref[r] = states[r, REF_TS]
            if ts[i] > new_ref[r]:
                new_ref[r] = ts[i]
        if code == 0:
            # 2. decay each touched state once, to its new reference time
            for r in range(n_states):
                if touched[r]:
                    s = &states[r, 0]
                    if s[N_EVENTS] > 0 and new_ref[r] > s[REF_TS]:
                        decay_state(s, &L, new_ref[r] - s[REF_TS], inv_hl, inv_hour_hl)
                    s[REF_TS] = new_ref[r]
            # 3. add each event, valued at its state's reference time
            for i in range(n):
                s = &states[rows[i], 0]
                t = ts[i]
                et = etype[i]
                ch = channel[i]
                dt = s[REF_TS] - t
                for h in range(L.H):
                    fh[h] = exp2(-dt * inv_hl[h])
                s[L.o_counts + et * L.C + ch] += 1.0
                for h in range(L.H):
                    s[L.o_decayed + h * TC + et * L.C + ch] += fh[h]
                s[N_EVENTS] += 1.0
                if t < s[FIRST_TS]:
                    s[FIRST_TS] = t
                if type_flags[et] & FLAG_PURCHASE:
                    s[MONETARY_ALL] += value[i]
                    for h in range(L.H):
                        s[L.o_money + h] += value[i] * fh[h]
                    if t > s[LAST_PURCHASE_TS]:
                        s[LAST_PURCHASE_TS] = t
                w = type_weight[et]
                if category[i] >= 0 and w != 0.0:
                    for h in range(L.H):
                        s[L.o_category + h * L.K + category[i]] += w * fh[h]
                if has_tz:
                    s[TZ_OFFSET_MIN] = tz[i]
                if type_flags[et] & FLAG_ENGAGEMENT:
                    s[L.o_hour + hour_of_week(t, s[TZ_OFFSET_MIN])] += exp2(-dt * inv_hour_hl)
                if item[i] >= 0 and w > 0.0:
                    recent_insert(s, &L, <double>item[i], t, et,
                                  value[i] if type_flags[et] & FLAG_VALUED else 1.0)
    if code:
        return code, i
    return 0, -1
