package io.clarion.client.conformance

import io.clarion.client.ClarionEvent
import io.clarion.client.ClarionListener
import io.clarion.client.ConnectionState
import org.json.JSONObject
import java.util.concurrent.locks.ReentrantLock
import kotlin.concurrent.withLock

/** A state as the suite names it: `connecting`, `connected`, `reconnecting`, `closed`. */
data class RecordedState(
    val name: String,
    val url: String? = null,
    val replicaId: String? = null,
    val delaySeconds: Double? = null,
    val code: Int? = null,
    val reason: String? = null,
)

/** What one client reported, with waiting on it (no polling: the client's callbacks signal). */
class Recorder : ClarionListener {
    private val lock = ReentrantLock()
    private val changed = lock.newCondition()
    val states = ArrayList<RecordedState>()
    val events = ArrayList<ClarionEvent>()
    val resets = ArrayList<String>()
    var tokenRequests = 0
        private set

    var stateCursor = 0
    var resetCursor = 0

    override fun onState(state: ConnectionState) {
        val recorded = when (state) {
            ConnectionState.Idle -> return
            is ConnectionState.Connecting -> RecordedState("connecting", url = state.url)
            is ConnectionState.Connected -> RecordedState("connected", url = state.url, replicaId = state.welcome.replicaId)
            is ConnectionState.Reconnecting ->
                RecordedState("reconnecting", delaySeconds = state.delayMs / 1000.0, code = state.code, reason = state.reason)
            is ConnectionState.Closed -> RecordedState("closed", code = state.code, reason = state.reason)
        }
        signal { states += recorded }
    }

    override fun onEvent(event: ClarionEvent) = signal { events += event }

    override fun onReset(reason: String) = signal { resets += reason }

    fun tokenRequested() = signal { tokenRequests += 1 }

    private fun signal(change: () -> Unit) = lock.withLock {
        change()
        changed.signalAll()
    }

    /** Waits until [check] gives a non-null answer (read under the lock), or the time is up. */
    fun <T : Any> await(withinSeconds: Double, check: Recorder.() -> T?): T? {
        val deadline = System.nanoTime() + (withinSeconds * 1e9).toLong()
        lock.withLock {
            while (true) {
                check()?.let { return it }
                val left = deadline - System.nanoTime()
                if (left <= 0) return null
                changed.awaitNanos(left)
            }
        }
    }

    fun <T> read(block: Recorder.() -> T): T = lock.withLock { block() }

    fun seqOf(event: ClarionEvent): Int = (event.data as? JSONObject)?.optInt("seq", -1) ?: -1

    fun keyOf(event: ClarionEvent): String = (event.data as? JSONObject)?.optString("key", "") ?: ""

    fun summary(): String = read {
        "states=${states.map { it.name + (it.code?.let { c -> "($c)" } ?: "") }} " +
            "seqs=${events.map(::seqOf)} resets=$resets tokenRequests=$tokenRequests"
    }
}
