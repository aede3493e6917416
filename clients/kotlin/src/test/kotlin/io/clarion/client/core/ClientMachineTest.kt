package io.clarion.client.core

import io.clarion.client.CloseCodes
import io.clarion.client.ConnectionState
import io.clarion.client.Transport
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertFalse
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.assertThrows

private const val W1 = "ws://127.0.0.1:1/ws/dashboard"
private const val W2 = "ws://127.0.0.1:2/ws/dashboard"

private const val WELCOME = """{"type":"welcome","connectionId":"c","replicaId":"w1","heartbeatSeconds":5,""" +
    """"resumable":true,"batch":false,"position":"POS0"}"""

private fun event(id: String, seq: Int) = """{"type":"event","id":"$id","data":{"seq":$seq,"key":"org"}}"""

/** Drives a machine as the edge would, keeping the time and the last actions. */
private class Harness(config: MachineConfig, random: Double = 0.5) {
    val machine = ClientMachine(config, { random })
    var now = 0L
    val all = mutableListOf<Action>()

    /** Pending timers as the edge keeps them: one per kind, a new start replaces the old. */
    val timers = HashMap<TimerKind, Pair<Int, Long>>()

    fun send(input: Input): List<Action> = machine.handle(input, now).also { actions ->
        all += actions
        for (action in actions) {
            when (action) {
                is Action.StartTimer -> timers[action.kind] = action.conn to now + action.delayMs
                is Action.CancelTimer -> timers.remove(action.kind)
                else -> Unit
            }
        }
    }

    /** Lets [ms] pass, firing the timers that fall due, in time order. */
    fun advance(ms: Long) {
        val end = now + ms
        while (true) {
            val (kind, due) = timers.entries.filter { it.value.second <= end }.minByOrNull { it.value.second }
                ?.let { it.key to it.value } ?: break
            timers.remove(kind)
            now = due.second
            send(Input.Timer(kind, due.first))
        }
        now = end
    }

    val conn: Int get() = all.filterIsInstance<Action.Open>().last().conn

    fun opens() = all.filterIsInstance<Action.Open>()

    fun states() = all.filterIsInstance<Action.State>().map { it.state }

    /** Open, welcome: a live connection. */
    fun connectFully(welcome: String = WELCOME): List<Action> {
        send(Input.Opened(conn))
        return send(Input.Text(conn, welcome))
    }
}

private fun config(
    vararg urls: String = arrayOf(W1, W2),
    token: String? = "T1",
    provider: Boolean = false,
    transport: Transport = Transport.WS,
    lastId: String? = null,
    batch: Boolean = false,
    eventTypes: List<String>? = null,
) = MachineConfig(
    urls = urls.toList(),
    transport = transport,
    token = token,
    hasTokenProvider = provider,
    lastId = lastId,
    batch = batch,
    eventTypes = eventTypes,
    pingIntervalMs = 1_000,
    pongTimeoutMs = 2_000,
    backoffBaseMs = 100,
    backoffCapMs = 1_000,
)

class ClientMachineTest {
    @Test
    fun `start opens the first URL with the token in a header and the plain subprotocol`() {
        val h = Harness(config())
        val actions = h.send(Input.Start)
        assertEquals(ConnectionState.Connecting(W1, 0), (actions[0] as Action.State).state)
        val open = actions[1] as Action.Open
        assertEquals(W1, open.url)
        assertEquals("Bearer T1", open.headers["Authorization"])
        assertEquals(listOf("clarion.v1"), open.subprotocols)
        assertEquals(Transport.WS, open.transport)
    }

    @Test
    fun `batch opt-in offers the batch subprotocol, over SSE a query flag`() {
        val ws = Harness(config(batch = true))
        ws.send(Input.Start)
        assertEquals(listOf("clarion.batch.v1"), ws.opens().single().subprotocols)
        val sse = Harness(config("http://h/sse/dashboard?x=1", batch = true, transport = Transport.SSE, lastId = "a b"))
        sse.send(Input.Start)
        assertEquals("http://h/sse/dashboard?x=1&batch=1&lastId=a+b", sse.opens().single().url)
        assertEquals("text/event-stream", sse.opens().single().headers["Accept"])
    }

    @Test
    fun `welcome connects and its position is the cursor until an event replaces it`() {
        val h = Harness(config())
        h.send(Input.Start)
        val actions = h.connectFully()
        val connected = actions.filterIsInstance<Action.State>().single().state as ConnectionState.Connected
        assertEquals("w1", connected.welcome.replicaId)
        assertEquals("POS0", h.machine.lastId)
        h.send(Input.Text(h.conn, event("E1", 1)))
        assertEquals("E1", h.machine.lastId)
    }

    @Test
    fun `a given lastId is not replaced by the welcome position`() {
        val h = Harness(config(lastId = "L0"))
        h.send(Input.Start)
        assertTrue(h.opens().single().url.endsWith("?lastId=L0"))
        h.connectFully()
        assertEquals("L0", h.machine.lastId)
    }

    @Test
    fun `events and batch frames come out one by one, in order`() {
        val h = Harness(config(batch = true))
        h.send(Input.Start)
        h.connectFully()
        h.send(Input.Text(h.conn, event("E1", 1)))
        h.send(Input.Text(h.conn, """{"type":"batch","events":[${event("E2", 2)},${event("E3", 3)}]}"""))
        val ids = h.all.filterIsInstance<Action.Event>().map { it.event.id }
        assertEquals(listOf("E1", "E2", "E3"), ids)
        assertEquals("E3", h.machine.lastId)
    }

    @Test
    fun `a lost connection retries with jittered backoff on the next replica with the last id`() {
        val h = Harness(config(), random = 0.5)
        h.send(Input.Start)
        h.connectFully()
        h.send(Input.Text(h.conn, event("E/1+", 1)))
        val first = h.conn
        h.now = 5_000
        val actions = h.send(Input.Closed(first, CloseCodes.ABNORMAL, "EOF"))
        val reconnecting = actions.filterIsInstance<Action.State>().single().state as ConnectionState.Reconnecting
        assertEquals(ConnectionState.Reconnecting(50, "closed_1006", CloseCodes.ABNORMAL), reconnecting)
        assertTrue(Action.StartTimer(TimerKind.RECONNECT, first, 50) in actions)
        assertTrue(Action.CancelTimer(TimerKind.PING) in actions)
        h.send(Input.Timer(TimerKind.RECONNECT, first))
        val open = h.opens().last()
        assertEquals("$W2?lastId=E%2F1%2B", open.url)
        // The next failure draws from a doubled window, and goes back to the first replica.
        h.send(Input.Closed(open.conn, null, "refused"))
        assertEquals(ConnectionState.Reconnecting(100, "connection_lost", CloseCodes.ABNORMAL), h.machine.state)
        h.send(Input.Timer(TimerKind.RECONNECT, open.conn))
        assertTrue(h.opens().last().url.startsWith(W1))
    }

    @Test
    fun `a connection that stayed up resets the backoff`() {
        val h = Harness(config(), random = 0.999)
        h.send(Input.Start)
        repeat(3) {
            val c = h.conn
            h.send(Input.Closed(c, null, "refused"))
            h.send(Input.Timer(TimerKind.RECONNECT, c))
        }
        assertEquals(3, h.machine.attempt)
        h.connectFully()
        h.now += 30_000
        h.send(Input.Closed(h.conn, CloseCodes.GOING_AWAY, "bye"))
        assertEquals(99L, (h.machine.state as ConnectionState.Reconnecting).delayMs)
    }

    @Test
    fun `reports of an earlier connection are ignored`() {
        val h = Harness(config())
        h.send(Input.Start)
        val old = h.conn
        h.send(Input.Closed(old, null, "x"))
        h.send(Input.Timer(TimerKind.RECONNECT, old))
        assertEquals(emptyList<Action>(), h.send(Input.Text(old, event("late", 9))))
        assertEquals(emptyList<Action>(), h.send(Input.Closed(old, 1000, "late")))
        assertEquals(emptyList<Action>(), h.send(Input.Timer(TimerKind.RECONNECT, old)))
        assertEquals(2, h.opens().size)
    }

    @Test
    fun `drain advice is followed with the advised delay and code 4100`() {
        val h = Harness(config(), random = 0.999)
        h.send(Input.Start)
        h.connectFully()
        val actions = h.send(Input.Text(h.conn, """{"type":"reconnect","reason":"drain","afterMs":1840}"""))
        assertTrue(Action.Close(h.conn, CloseCodes.NORMAL, "reconnect advice") in actions)
        h.send(Input.Closed(h.conn, CloseCodes.DRAIN, ""))
        assertEquals(ConnectionState.Reconnecting(1_840, "drain", CloseCodes.DRAIN), h.machine.state)
    }

    @Test
    fun `drain advice over SSE, the stream ends after it`() {
        val h = Harness(config("http://h/sse", transport = Transport.SSE))
        h.send(Input.Start)
        h.connectFully()
        val actions = h.send(Input.Text(h.conn, """{"type":"reconnect","reason":"drain","afterMs":700}"""))
        assertFalse(actions.any { it is Action.Close })
        h.send(Input.Closed(h.conn, null, "stream ended"))
        assertEquals(ConnectionState.Reconnecting(700, "drain", CloseCodes.DRAIN), h.machine.state)
    }

    @Test
    fun `expired token mid-connection asks the provider and reconnects at once`() {
        val h = Harness(config(token = null, provider = true))
        assertEquals(listOf<Action>(Action.FetchToken), h.send(Input.Start))
        assertEquals(emptyList<Action>(), h.send(Input.Start))
        h.send(Input.TokenReady("T1"))
        assertEquals("Bearer T1", h.opens().single().headers["Authorization"])
        h.connectFully()
        h.send(Input.Text(h.conn, event("E1", 1)))
        h.send(Input.Text(h.conn, """{"type":"error","code":4004,"message":"expired"}"""))
        val actions = h.send(Input.Closed(h.conn, CloseCodes.TOKEN_EXPIRED, ""))
        assertEquals(ConnectionState.Reconnecting(0, "token_expired", CloseCodes.TOKEN_EXPIRED), h.machine.state)
        assertEquals(Action.FetchToken, actions.last())
        h.send(Input.TokenReady("T2"))
        val open = h.opens().last()
        assertEquals("Bearer T2", open.headers["Authorization"])
        assertEquals("$W1?lastId=E1", open.url)
        assertEquals(2, h.states().count { it is ConnectionState.Connecting })
    }

    @Test
    fun `the same token again, or none, after an expiry stops the client`() {
        for (answer in listOf("T1", null)) {
            val h = Harness(config(token = null, provider = true))
            h.send(Input.Start)
            h.send(Input.TokenReady("T1"))
            h.connectFully()
            h.send(Input.Closed(h.conn, CloseCodes.TOKEN_EXPIRED, "expired"))
            h.send(Input.TokenReady(answer))
            assertEquals(ConnectionState.Closed("expired (no fresh token)", 4004, refused = true), h.machine.state)
            assertEquals(1, h.opens().size)
        }
    }

    @Test
    fun `an expired token and no provider stops at once`() {
        val h = Harness(config())
        h.send(Input.Start)
        h.send(Input.Opened(h.conn))
        h.send(Input.Text(h.conn, """{"type":"error","code":4004,"message":"expired"}"""))
        h.send(Input.Closed(h.conn, CloseCodes.TOKEN_EXPIRED, ""))
        assertEquals(ConnectionState.Closed("expired", 4004, refused = true), h.machine.state)
    }

    @Test
    fun `refusals that retrying cannot fix are terminal, with the server's message`() {
        for (code in listOf(4001, 4003, 4009, 1002, 1003, 1007, 1009)) {
            val h = Harness(config())
            h.send(Input.Start)
            h.send(Input.Opened(h.conn))
            h.send(Input.Text(h.conn, """{"type":"error","code":$code,"message":"bad_signature"}"""))
            val actions = h.send(Input.Closed(h.conn, code, ""))
            assertEquals(ConnectionState.Closed("bad_signature", code, refused = true), h.machine.state)
            assertFalse(actions.any { it is Action.StartTimer }, "code $code started a timer")
            // Terminal: nothing more happens, whatever arrives.
            assertEquals(emptyList<Action>(), h.send(Input.Timer(TimerKind.RECONNECT, h.conn)))
            assertEquals(emptyList<Action>(), h.send(Input.Start))
        }
    }

    @Test
    fun `HTTP refusals over SSE`() {
        fun refuse(status: Int, body: String?, provider: Boolean = false): Harness {
            val h = Harness(config("http://h/sse", transport = Transport.SSE, provider = provider))
            h.send(Input.Start)
            h.send(Input.Refused(h.conn, status, body))
            return h
        }
        // Reported with the WebSocket close code of the same reason, as over WebSocket.
        assertEquals(
            ConnectionState.Closed("bad_signature", 4001, refused = true),
            refuse(401, """{"error":"bad_signature","message":"bad_signature"}""").machine.state,
        )
        assertEquals(
            ConnectionState.Closed("wrong_audience", 4003, true),
            refuse(403, """{"error":"wrong_audience"}""").machine.state,
        )
        assertEquals(ConnectionState.Closed("url_too_long", 414, true), refuse(414, """{"error":"url_too_long"}""").machine.state)
        val expired = refuse(401, """{"error":"expired","message":"expired"}""", provider = true)
        assertEquals(Action.FetchToken, expired.all.last())
        val busy = refuse(503, """{"error":"unavailable"}""").machine.state as ConnectionState.Reconnecting
        assertEquals(4013, busy.code)
        assertEquals("overloaded", busy.reason)
        val timeout = refuse(408, """{"error":"handshake_timeout"}""").machine.state as ConnectionState.Reconnecting
        assertEquals(ConnectionState.Reconnecting(50, "http_408", 408), timeout)
    }

    @Test
    fun `reset forgets the cursor and is reported`() {
        val h = Harness(config(lastId = "stale"))
        h.send(Input.Start)
        h.connectFully()
        val actions = h.send(Input.Text(h.conn, """{"type":"reset","reason":"bad_cursor"}"""))
        assertEquals(listOf(Action.Reset("bad_cursor")), actions.filterIsInstance<Action.Reset>())
        assertNull(h.machine.lastId)
        h.send(Input.Closed(h.conn, 1011, ""))
        h.send(Input.Timer(TimerKind.RECONNECT, h.conn))
        assertEquals(W2, h.opens().last().url)
    }

    @Test
    fun `an unanswered ping drops the connection, retried as 1006 heartbeat`() {
        val h = Harness(config())
        h.send(Input.Start)
        val opened = h.send(Input.Opened(h.conn))
        assertTrue(Action.StartTimer(TimerKind.PING, h.conn, 1_000) in opened)
        h.send(Input.Text(h.conn, WELCOME))
        val ping = h.send(Input.Timer(TimerKind.PING, h.conn))
        assertEquals(
            listOf(
                Action.Send(h.conn, Frames.PING),
                Action.StartTimer(TimerKind.PONG, h.conn, 2_000),
                Action.StartTimer(TimerKind.PING, h.conn, 1_000),
            ),
            ping,
        )
        // A pong (or any frame) proves the peer alive.
        assertTrue(Action.CancelTimer(TimerKind.PONG) in h.send(Input.Text(h.conn, """{"type":"pong"}""")))
        h.send(Input.Timer(TimerKind.PING, h.conn))
        val dead = h.conn
        val actions = h.send(Input.Timer(TimerKind.PONG, dead))
        assertEquals(Action.Abort(dead), actions.first())
        val state = h.machine.state as ConnectionState.Reconnecting
        assertEquals(CloseCodes.ABNORMAL, state.code)
        assertTrue(state.reason.startsWith("heartbeat"))
        // The aborted socket's own report comes later and is ignored.
        assertEquals(emptyList<Action>(), h.send(Input.Closed(dead, 1006, "canceled")))
    }

    @Test
    fun `a silent peer is given up within the ping interval plus the timeout, though pings go on`() {
        val h = Harness(config()) // ping every 1 s, dead 2 s after an unanswered ping
        h.send(Input.Start)
        h.connectFully()
        h.advance(2_999)
        assertTrue(h.machine.state is ConnectionState.Connected, "gave up early: ${h.machine.state}")
        h.advance(1)
        val state = h.machine.state as ConnectionState.Reconnecting
        assertEquals(CloseCodes.ABNORMAL, state.code)
        assertTrue(state.reason.startsWith("heartbeat"))
        assertEquals(1, h.all.count { it is Action.Abort })
    }

    @Test
    fun `a peer that answers each ping stays connected`() {
        val h = Harness(config())
        h.send(Input.Start)
        h.connectFully()
        repeat(20) {
            h.advance(1_000)
            h.send(Input.Text(h.conn, """{"type":"pong"}"""))
        }
        assertTrue(h.machine.state is ConnectionState.Connected)
        assertEquals(20, h.all.count { it is Action.Send && it.text == Frames.PING })
    }

    @Test
    fun `SSE silence longer than the heartbeat plus the timeout is a dead stream`() {
        val h = Harness(config("http://h/sse", transport = Transport.SSE))
        h.send(Input.Start)
        assertTrue(Action.StartTimer(TimerKind.IDLE, h.conn, 3_000) in h.send(Input.Opened(h.conn)))
        assertTrue(Action.StartTimer(TimerKind.IDLE, h.conn, 7_000) in h.send(Input.Text(h.conn, WELCOME)))
        assertEquals(listOf(Action.StartTimer(TimerKind.IDLE, h.conn, 7_000)), h.send(Input.Activity(h.conn)))
        h.send(Input.Timer(TimerKind.IDLE, h.conn))
        assertTrue((h.machine.state as ConnectionState.Reconnecting).reason.startsWith("heartbeat"))
    }

    @Test
    fun `a subscription is sent once open`() {
        val h = Harness(config(eventTypes = listOf("A", "B\"")))
        h.send(Input.Start)
        val actions = h.send(Input.Opened(h.conn))
        assertEquals(Action.Send(h.conn, """{"type":"subscribe","eventTypes":["A","B\""]}"""), actions.first())
    }

    @Test
    fun `close ends for good`() {
        val h = Harness(config())
        h.send(Input.Start)
        h.connectFully()
        val actions = h.send(Input.Stop)
        assertEquals(Action.Close(h.conn, 1000, "client closed"), actions.first())
        assertEquals(ConnectionState.Closed("closed by client", 1000, refused = false), h.machine.state)
        assertEquals(emptyList<Action>(), h.send(Input.Closed(h.conn, 1000, "")))
        assertEquals(emptyList<Action>(), h.send(Input.Start))
    }

    @Test
    fun `a failing token provider is asked again after a backoff delay, not given up on`() {
        val h = Harness(config(token = null, provider = true), random = 0.5)
        h.send(Input.Start)
        h.send(Input.TokenFailed("auth server unreachable"))
        val state = h.machine.state as ConnectionState.Reconnecting
        assertEquals(50, state.delayMs)
        assertTrue(state.reason.startsWith("token_provider_failed"))
        assertEquals(0, h.opens().size)
        h.advance(50)
        assertEquals(Action.FetchToken, h.all.last())
        h.send(Input.TokenReady("T1"))
        assertEquals("Bearer T1", h.opens().single().headers["Authorization"])
        // And after an expiry: the refresh is retried too, then connects with the fresh token.
        h.connectFully()
        h.send(Input.Closed(h.conn, CloseCodes.TOKEN_EXPIRED, "expired"))
        h.send(Input.TokenFailed("timeout"))
        h.advance(1_000)
        h.send(Input.TokenReady("T2"))
        assertEquals("Bearer T2", h.opens().last().headers["Authorization"])
    }

    @Test
    fun `the initial token provider giving nothing is a refusal`() {
        val h = Harness(config(token = null, provider = true))
        h.send(Input.Start)
        h.send(Input.TokenReady(null))
        assertEquals(true, (h.machine.state as ConnectionState.Closed).refused)
        assertEquals(0, h.opens().size)
    }

    @Test
    fun `configuration mistakes are refused with a clear message`() {
        assertThrows<IllegalArgumentException> { config(*emptyArray()) }
        val scheme = assertThrows<IllegalArgumentException> { config("ws://h/sse", transport = Transport.SSE) }
        assertTrue(scheme.message!!.contains("scheme"))
        assertThrows<IllegalArgumentException> { config(token = null, provider = false) }
    }
}
