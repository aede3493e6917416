package io.clarion.client.conformance

import io.clarion.client.ClarionClient
import io.clarion.client.ClarionOptions
import io.clarion.client.Transport
import org.json.JSONArray
import org.json.JSONObject
import org.junit.jupiter.api.Assumptions.assumeTrue
import org.junit.jupiter.api.DynamicTest
import org.junit.jupiter.api.TestFactory
import java.io.File
import java.util.concurrent.ConcurrentHashMap
import java.util.concurrent.atomic.AtomicInteger

/**
 * The conformance suite (clients/conformance/scenarios/\*.json) run on this library: one
 * dynamic test per scenario, against the control server named by the system property
 * `clarion.conformance.control` or the environment's `CLARION_CONFORMANCE_CONTROL`
 * (tests/clients/test_kotlin.py starts one on the local stack). Without one, the scenarios
 * are skipped. `clarion.conformance.only` / `CLARION_CONFORMANCE_ONLY` picks scenarios
 * (comma-separated). Each outcome is also written to `target/conformance-results.json`.
 */
class ConformanceTest {
    private fun setting(property: String, env: String): String? =
        System.getProperty(property)?.takeIf { it.isNotBlank() } ?: System.getenv(env)?.takeIf { it.isNotBlank() }

    @TestFactory
    fun scenarios(): List<DynamicTest> {
        val dir = File(setting("clarion.conformance.scenarios", "CLARION_CONFORMANCE_SCENARIOS") ?: "../conformance/scenarios")
        val only = setting("clarion.conformance.only", "CLARION_CONFORMANCE_ONLY")?.split(',')?.map { it.trim() }?.toSet()
        val files = (dir.listFiles { f -> f.name.endsWith(".json") } ?: emptyArray())
            .sortedBy { it.name }
            .filter { only == null || it.name.removeSuffix(".json") in only }
        require(files.isNotEmpty()) { "no scenario in ${dir.absolutePath}" + (only?.let { " named $it" } ?: "") }
        val control = setting("clarion.conformance.control", "CLARION_CONFORMANCE_CONTROL")
        return files.map { file ->
            val name = file.name.removeSuffix(".json")
            DynamicTest.dynamicTest(name) {
                assumeTrue(control != null, "no control server (set CLARION_CONFORMANCE_CONTROL)")
                val started = System.nanoTime()
                try {
                    ScenarioRun(Control(control!!), JSONObject(file.readText())).run()
                    Results.record(name, "passed", null, started)
                } catch (error: Throwable) {
                    Results.record(name, "failed", error.message ?: error.toString(), started)
                    throw error
                }
            }
        }
    }
}

/** Outcomes by scenario, for the pytest wrapper to report one by one. */
object Results {
    private val results = JSONObject()

    @Synchronized
    fun record(name: String, outcome: String, message: String?, startedNanos: Long) {
        results.put(
            name,
            JSONObject()
                .put("outcome", outcome)
                .put("message", message ?: JSONObject.NULL)
                .put("seconds", (System.nanoTime() - startedNanos) / 1e9),
        )
        val out = File("target/conformance-results.json")
        out.parentFile?.mkdirs()
        out.writeText(results.toString(2))
    }
}

/** One scenario: its steps in order, then every client closed and `/teardown`. */
class ScenarioRun(private val control: Control, private val scenario: JSONObject) {
    private val variables = Variables()
    private val clients = LinkedHashMap<String, ClarionClient>()
    private val recorders = ConcurrentHashMap<String, Recorder>()
    private val deadline = System.nanoTime() + (scenario.optDouble("timeout", 60.0) * 1e9).toLong()

    fun run() {
        val steps = scenario.getJSONArray("steps")
        try {
            for (index in 0 until steps.length()) {
                val step = variables.substitute(steps.getJSONObject(index)) as JSONObject
                try {
                    perform(step)
                    checkNothingAfterClosed()
                } catch (error: AssertionError) {
                    val context = recorders.entries.joinToString("; ") { (id, r) -> "$id: ${r.summary()}" }
                    throw AssertionError("step ${index + 1} ${steps.getJSONObject(index)}: ${error.message}\n  $context", error)
                }
                if (System.nanoTime() > deadline) throw AssertionError("scenario took longer than its timeout")
            }
        } finally {
            for (client in clients.values) client.close()
            try {
                control.post("teardown", JSONObject())
            } catch (_: Throwable) {
                // the scenario's own failure, if any, is the one to report
            }
        }
    }

    private fun perform(step: JSONObject) {
        when {
            step.has("control") -> {
                val answer = control.post(step.getString("control"), step.optJSONObject("args") ?: JSONObject())
                step.optString("save").takeIf { it.isNotEmpty() }?.let { variables.save(it, answer) }
            }
            step.has("client") -> client(step)
            step.has("expect") -> expect(step)
            else -> throw AssertionError("unknown step kind")
        }
    }

    private fun client(step: JSONObject) {
        val id = step.getString("id")
        when (val action = step.getString("client")) {
            "connect" -> {
                check(id !in clients) { "client $id is already connected" }
                val recorder = Recorder()
                recorders[id] = recorder
                val client = ClarionClient(options(step.optJSONObject("options") ?: JSONObject(), recorder))
                clients[id] = client
                client.start()
            }
            "close" -> {
                val client = clients[id] ?: throw AssertionError("no client $id")
                client.close()
                recorder(id).await(10.0) { states.lastOrNull()?.takeIf { it.name == "closed" } }
                    ?: throw AssertionError("client $id did not report closed after close()")
                step.optString("save").takeIf { it.isNotEmpty() }?.let {
                    variables.save(it, JSONObject().put("lastId", client.lastId ?: JSONObject.NULL))
                }
            }
            else -> throw AssertionError("unknown client action $action")
        }
    }

    private fun options(json: JSONObject, recorder: Recorder): ClarionOptions {
        val urls = json.getJSONArray("urls").let { a -> (0 until a.length()).map { a.getString(it) } }
        val tokens = json.optJSONArray("tokens")?.let { a -> (0 until a.length()).map { a.getString(it) } }
        val provider: (suspend () -> String?)? = tokens?.let { list ->
            val calls = AtomicInteger()
            val fn: suspend () -> String? = {
                recorder.tokenRequested()
                list[minOf(calls.getAndIncrement(), list.size - 1)]
            }
            fn
        }
        val transport = when (val t = json.optString("transport", "ws")) {
            "ws" -> Transport.WS
            "sse" -> Transport.SSE
            else -> throw AssertionError("unknown transport $t")
        }
        return ClarionOptions(
            urls = urls,
            transport = transport,
            token = if (json.isNull("token")) null else json.optString("token"),
            tokenProvider = provider,
            lastId = if (json.isNull("lastId")) null else json.optString("lastId"),
            batch = json.optBoolean("batch", false),
            pingIntervalMs = (json.optDouble("heartbeatInterval", 30.0) * 1000).toLong(),
            pongTimeoutMs = (json.optDouble("heartbeatTimeout", 10.0) * 1000).toLong(),
            backoffBaseMs = (json.optDouble("backoffBase", 1.0) * 1000).toLong(),
            backoffCapMs = (json.optDouble("backoffCap", 60.0) * 1000).toLong(),
            listener = recorder,
        )
    }

    private fun recorder(id: String): Recorder = recorders[id] ?: throw AssertionError("no client $id")

    private fun within(step: JSONObject): Double {
        val left = (deadline - System.nanoTime()) / 1e9
        return minOf(step.optDouble("within", 20.0), maxOf(left, 0.0))
    }

    private fun expect(step: JSONObject) {
        val id = step.optString("id")
        when (val kind = step.getString("expect")) {
            "state" -> expectState(recorder(id), step)
            "events" -> expectEvents(recorder(id), step)
            "reset" -> {
                val reason = step.optString("reason").takeIf { it.isNotEmpty() }
                val r = recorder(id)
                val at = r.await(within(step)) {
                    (resetCursor until resets.size).firstOrNull { reason == null || resets[it] == reason }
                } ?: throw AssertionError("no reset${reason?.let { " ($it)" } ?: ""} within ${within(step)} s")
                r.read { resetCursor = at + 1 }
            }
            "tokenRequests" -> {
                val atLeast = step.getInt("atLeast")
                recorder(id).await(within(step)) { tokenRequests.takeIf { it >= atLeast } }
                    ?: throw AssertionError("token provider called ${recorder(id).tokenRequests} times, wanted >= $atLeast")
            }
            "connects" -> {
                val count = step.getInt("count")
                val seen = recorder(id).read { states.count { it.name == "connecting" } }
                if (seen != count) throw AssertionError("$seen connecting states, wanted $count")
            }
            else -> throw AssertionError("unknown expectation $kind")
        }
    }

    private fun expectState(r: Recorder, step: JSONObject) {
        val name = step.getString("state")
        fun matches(s: RecordedState): Boolean {
            if (s.name != name) return false
            if (step.has("code") && s.code != step.getInt("code")) return false
            if (step.has("reason") && !(s.reason ?: "").startsWith(step.getString("reason"))) return false
            if (step.has("replicaId") && s.replicaId != step.getString("replicaId")) return false
            if (step.has("url") && s.url != step.getString("url")) return false
            step.optJSONObject("delay")?.let { window ->
                val delay = s.delaySeconds ?: return false
                if (window.has("min") && delay < window.getDouble("min")) return false
                if (window.has("max") && delay > window.getDouble("max")) return false
            }
            return true
        }
        val at = r.await(within(step)) { (stateCursor until states.size).firstOrNull { matches(states[it]) } }
            ?: throw AssertionError("no state matching ${step.toString()} within ${within(step)} s")
        r.read { stateCursor = at + 1 }
    }

    private fun flatten(seqs: JSONArray): List<Int> = (0 until seqs.length()).flatMap { i ->
        when (val item = seqs.get(i)) {
            is JSONArray -> (0 until item.length()).map { item.getInt(it) }
            is Number -> listOf(item.toInt())
            else -> throw AssertionError("seqs item $item is neither a number nor a list")
        }
    }

    private fun expectEvents(r: Recorder, step: JSONObject) {
        val expected = flatten(step.getJSONArray("seqs"))
        val wanted = expected.toSet()
        val received = r.await(within(step)) {
            val seqs = events.map(::seqOf)
            seqs.takeIf { it.toSet().containsAll(wanted) }?.let { events.map { e -> seqOf(e) to keyOf(e) } }
        } ?: run {
            val got = r.read { events.map(::seqOf).toSet() }
            throw AssertionError("missing seqs ${(wanted - got).sorted()} after ${within(step)} s")
        }
        // The sequence check: exactly the expected multiset, increasing within each key.
        val seqs = received.map { it.first }
        val duplicates = seqs.groupingBy { it }.eachCount().filterValues { it > 1 }.keys
        if (duplicates.isNotEmpty()) throw AssertionError("duplicate seqs ${duplicates.sorted()}")
        val extra = seqs.toSet() - wanted
        if (extra.isNotEmpty()) throw AssertionError("unexpected seqs ${extra.sorted()}")
        if (seqs.size != expected.size) throw AssertionError("received ${seqs.size} events, expected ${expected.size}")
        val last = HashMap<String, Int>()
        for ((seq, key) in received) {
            val before = last[key]
            if (before != null && seq <= before) throw AssertionError("out of order within key $key: $seq after $before")
            last[key] = seq
        }
    }

    private fun checkNothingAfterClosed() {
        for ((id, r) in recorders) {
            r.read {
                val closedAt = states.indexOfFirst { it.name == "closed" }
                if (closedAt >= 0 && closedAt < states.size - 1) {
                    throw AssertionError("client $id reported ${states.drop(closedAt + 1).map { it.name }} after closed")
                }
            }
        }
    }
}
