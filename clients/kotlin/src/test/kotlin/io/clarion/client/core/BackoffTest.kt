package io.clarion.client.core

import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.assertThrows

class BackoffTest {
    private fun fixed(value: Double): () -> Double = { value }

    @Test
    fun `the window doubles per attempt and stops at the cap`() {
        val backoff = Backoff(fixed(0.999999), baseMs = 1_000, capMs = 60_000)
        val delays = (0 until 9).map { backoff.nextDelayMs() }
        assertEquals(listOf(999L, 1_999L, 3_999L, 7_999L, 15_999L, 31_999L, 59_999L, 59_999L, 59_999L), delays)
    }

    @Test
    fun `full jitter draws from zero to the ceiling`() {
        val zero = Backoff(fixed(0.0), baseMs = 100, capMs = 1_000)
        repeat(5) { assertEquals(0L, zero.nextDelayMs()) }
        val half = Backoff(fixed(0.5), baseMs = 100, capMs = 1_000)
        assertEquals(listOf(50L, 100L, 200L, 400L, 500L, 500L), (0 until 6).map { half.nextDelayMs() })
    }

    @Test
    fun `a real random source stays inside the window`() {
        val random = java.util.Random(7)
        val backoff = Backoff({ random.nextDouble() }, baseMs = 100, capMs = 1_000)
        val delays = (0 until 200).map { attempt ->
            val ceiling = backoff.ceilingMs()
            val delay = backoff.nextDelayMs()
            assertTrue(delay in 0..ceiling, "attempt $attempt: $delay outside [0, $ceiling]")
            delay
        }
        // Jittered, not a fixed ladder: at the cap the draws differ.
        assertTrue(delays.drop(10).toSet().size > 50)
    }

    @Test
    fun `server advice is followed as given and still counts as an attempt`() {
        val backoff = Backoff(fixed(0.9), baseMs = 1_000, capMs = 60_000)
        assertEquals(1_840L, backoff.nextDelayMs(advisedMs = 1_840))
        assertEquals(1, backoff.attempt)
        assertEquals(0L, backoff.nextDelayMs(advisedMs = -5))
    }

    @Test
    fun `a stable connection resets the attempts, a short one does not`() {
        val backoff = Backoff(fixed(0.5), baseMs = 1_000, capMs = 60_000, stableMs = 30_000)
        repeat(4) { backoff.nextDelayMs() }
        backoff.connected(nowMs = 1_000)
        backoff.disconnected(nowMs = 30_999)
        assertEquals(4, backoff.attempt)
        backoff.connected(nowMs = 40_000)
        backoff.disconnected(nowMs = 70_000)
        assertEquals(0, backoff.attempt)
        assertEquals(500L, backoff.nextDelayMs())
    }

    @Test
    fun `many attempts do not overflow`() {
        val backoff = Backoff(fixed(0.999), baseMs = 1_000, capMs = 60_000)
        repeat(10_000) { backoff.nextDelayMs() }
        assertEquals(60_000L, backoff.ceilingMs())
        assertTrue(backoff.nextDelayMs() in 59_000L..60_000L)
    }

    @Test
    fun `bad settings are refused with a clear message`() {
        val error = assertThrows<IllegalArgumentException> { Backoff(fixed(0.5), baseMs = 1_000, capMs = 10) }
        assertTrue(error.message!!.contains("cap"))
    }
}
