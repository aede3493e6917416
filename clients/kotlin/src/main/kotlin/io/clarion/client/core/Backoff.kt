package io.clarion.client.core

/**
 * Reconnect delays: exponential backoff with full jitter, capped.
 *
 * `delay = uniform(0, min(cap, base * 2^attempt))` ("full jitter"), so a fleet of clients
 * dropped at the same moment comes back spread over the whole interval instead of in
 * lock-step. A connection that stayed up [stableMs] resets the attempt count. Server
 * advice (a drain's `reconnect.afterMs`, already jittered per client by the server) wins
 * over the computed delay. Times are passed in; the random source is injected
 * (a uniform double in [0, 1)).
 */
class Backoff(
    private val random: () -> Double,
    val baseMs: Long = 1_000,
    val capMs: Long = 60_000,
    val stableMs: Long = 30_000,
) {
    init {
        require(baseMs > 0) { "backoff base must be positive, got $baseMs ms" }
        require(capMs >= baseMs) { "backoff cap ($capMs ms) must be at least the base ($baseMs ms)" }
    }

    var attempt: Int = 0
        private set
    private var connectedAt: Long? = null

    /** The ceiling of the window the next delay is drawn from. */
    fun ceilingMs(): Long {
        val exponent = attempt.coerceIn(0, MAX_EXPONENT)
        val ceiling = baseMs.toDouble() * Math.pow(2.0, exponent.toDouble())
        return if (ceiling >= capMs) capMs else ceiling.toLong()
    }

    /** The delay before the next attempt: [advisedMs] when the server gave one, else jittered. */
    fun nextDelayMs(advisedMs: Long? = null): Long {
        val delay = if (advisedMs != null) {
            advisedMs.coerceAtLeast(0)
        } else {
            val r = random().coerceIn(0.0, 1.0)
            (r * ceilingMs()).toLong().coerceIn(0, capMs)
        }
        attempt += 1
        return delay
    }

    fun connected(nowMs: Long) {
        connectedAt = nowMs
    }

    fun disconnected(nowMs: Long) {
        val since = connectedAt
        if (since != null && nowMs - since >= stableMs) attempt = 0
        connectedAt = null
    }

    companion object {
        /** Beyond this 2^attempt only overflows: the cap wins anyway. */
        const val MAX_EXPONENT = 62
    }
}
