package io.clarion.client.core

import io.clarion.client.ClarionEvent
import io.clarion.client.CloseCodes
import io.clarion.client.ConnectionState
import io.clarion.client.Transport
import java.net.URLEncoder
import java.nio.charset.StandardCharsets

/** What the machine needs to know, fixed for a client's life. */
data class MachineConfig(
    /** One entry-point URL, or the replicas' URLs: each retry moves to the next one. */
    val urls: List<String>,
    val transport: Transport = Transport.WS,
    /** A fixed token; without one, the token provider is asked before the first connect. */
    val token: String? = null,
    val hasTokenProvider: Boolean = false,
    /** Resume from here on the first connect (null: start live). */
    val lastId: String? = null,
    /** Opt in to `batch` frames (subprotocol `clarion.batch.v1`, `?batch=1` over SSE). */
    val batch: Boolean = false,
    /** Narrow the connection to these event types (WebSocket only); null or empty: all. */
    val eventTypes: List<String>? = null,
    /** An application `ping` this often (WebSocket); the protocol asks for 30 s or less. */
    val pingIntervalMs: Long = 30_000,
    /** No `pong` (nor any other frame) this long after a ping: the connection is dead. */
    val pongTimeoutMs: Long = 10_000,
    val backoffBaseMs: Long = 1_000,
    val backoffCapMs: Long = 60_000,
    val stableMs: Long = 30_000,
) {
    init {
        require(urls.isNotEmpty()) { "at least one URL is needed" }
        for (url in urls) {
            val scheme = url.substringBefore("://", "").lowercase()
            val allowed = if (transport == Transport.WS) setOf("ws", "wss", "http", "https") else setOf("http", "https")
            require(scheme in allowed) { "URL $url: scheme must be one of $allowed for $transport" }
        }
        require(token != null || hasTokenProvider) { "a token or a token provider is needed" }
        require(pingIntervalMs > 0) { "pingIntervalMs must be positive" }
        require(pongTimeoutMs > 0) { "pongTimeoutMs must be positive" }
    }
}

enum class TimerKind { RECONNECT, PING, PONG, IDLE }

/** What the edge reports. `conn` names the connection an input belongs to: stale ones are ignored. */
sealed interface Input {
    data object Start : Input

    /** The token provider's answer to [Action.FetchToken]. */
    data class TokenReady(val token: String?) : Input

    /** The token provider failed (threw): asked again after a backoff delay. */
    data class TokenFailed(val message: String) : Input

    /** The transport is open: WebSocket upgraded, or SSE answered 200. */
    data class Opened(val conn: Int) : Input

    /** A WebSocket text frame, or an SSE message's data. */
    data class Text(val conn: Int, val text: String) : Input

    /** Bytes arrived that carry no frame (an SSE `: ping` comment): the peer is alive. */
    data class Activity(val conn: Int) : Input

    /** The connection ended: a close code (WebSocket), or null (stream end, I/O error). */
    data class Closed(val conn: Int, val code: Int?, val reason: String) : Input

    /** Refused over HTTP before any frame (SSE status, or a WebSocket upgrade refused). */
    data class Refused(val conn: Int, val status: Int, val body: String?) : Input

    data class Timer(val kind: TimerKind, val conn: Int) : Input

    /** The application closes the client. */
    data object Stop : Input
}

/** What the edge must do, in order. */
sealed interface Action {
    data object FetchToken : Action

    data class Open(
        val conn: Int,
        val transport: Transport,
        val url: String,
        val headers: Map<String, String>,
        val subprotocols: List<String>,
    ) : Action

    data class Send(val conn: Int, val text: String) : Action

    /** Close gracefully (close frame, or end the stream). */
    data class Close(val conn: Int, val code: Int, val reason: String) : Action

    /** Drop the connection at once: the peer is not answering. */
    data class Abort(val conn: Int) : Action

    data class StartTimer(val kind: TimerKind, val conn: Int, val delayMs: Long) : Action

    data class CancelTimer(val kind: TimerKind) : Action

    data class State(val state: ConnectionState) : Action

    data class Event(val event: ClarionEvent) : Action

    data class Reset(val reason: String) : Action
}

/**
 * The client's whole behaviour, without I/O: inputs in, actions out. The edge (OkHttp)
 * feeds it one input at a time, with the monotonic time in ms, and carries out the actions.
 *
 * - `lastId`: the welcome's `position` until an event replaces it, then each event's id;
 *   sent as `lastId` on every connect. A `reset` forgets it (the server could not resume).
 * - Reconnects: full-jitter backoff ([Backoff]); a drain's `reconnect.afterMs` is followed
 *   as given; each retry moves to the next URL.
 * - 4004 (or HTTP 401 `expired`): a fresh token from the provider, then reconnect at once;
 *   none, or the same one again: stop, refused.
 * - Codes retrying cannot fix (4001, 4003, 4009, 1002, 1003, 1007, 1009; HTTP 401, 403,
 *   414, 431): stop, refused, with the server's `error` message.
 * - Heartbeat: WebSocket `ping` every [MachineConfig.pingIntervalMs], dead after
 *   [MachineConfig.pongTimeoutMs] without any frame; SSE dead after the welcome's
 *   `heartbeatSeconds` plus that timeout without a byte.
 */
class ClientMachine(private val config: MachineConfig, random: () -> Double) {
    private val backoff = Backoff(random, config.backoffBaseMs, config.backoffCapMs, config.stableMs)

    var lastId: String? = config.lastId
        private set
    var token: String? = config.token
        private set
    var state: ConnectionState = ConnectionState.Idle
        private set

    private var conn = 0
    private var active = false
    private var urlIndex = 0
    private var heartbeatSeconds: Int? = null
    private var advisedMs: Long? = null
    private var lastError: ServerFrame.Error? = null
    private var fetching: Fetch? = null
    /** A failed token fetch to try again when the reconnect timer fires. */
    private var refetch: Fetch? = null
    private var reconnectPending = false
    /** A ping is out and nothing has arrived since: the PONG deadline runs (and is not pushed back). */
    private var awaitingPong = false
    private var terminal = false

    private enum class Fetch { INITIAL, REFRESH }

    val currentUrl: String get() = config.urls[urlIndex]
    val attempt: Int get() = backoff.attempt

    fun handle(input: Input, nowMs: Long): List<Action> {
        if (terminal) return emptyList()
        val out = mutableListOf<Action>()
        when (input) {
            Input.Start -> start(out)
            is Input.TokenReady -> tokenReady(input.token, out)
            is Input.TokenFailed -> tokenFailed(input.message, out)
            is Input.Opened -> if (live(input.conn)) opened(out)
            is Input.Text -> if (live(input.conn)) text(input.text, nowMs, out)
            is Input.Activity -> if (live(input.conn)) alive(out)
            is Input.Closed -> if (live(input.conn)) lost(input.code, input.reason, null, null, nowMs, out)
            is Input.Refused -> if (live(input.conn)) {
                lost(null, "HTTP ${input.status}", input.status, Frames.httpError(input.body), nowMs, out)
            }
            is Input.Timer -> timer(input, nowMs, out)
            Input.Stop -> stop(out)
        }
        return out
    }

    private fun live(c: Int) = active && c == conn

    private fun start(out: MutableList<Action>) {
        if (state != ConnectionState.Idle || fetching != null) return
        if (token == null) {
            fetching = Fetch.INITIAL
            out += Action.FetchToken
        } else {
            connect(out)
        }
    }

    private fun tokenReady(fresh: String?, out: MutableList<Action>) {
        val kind = fetching ?: return
        fetching = null
        when {
            fresh.isNullOrEmpty() && kind == Fetch.INITIAL ->
                finish(ConnectionState.Closed("the token provider gave no token", null, refused = true), out)
            fresh.isNullOrEmpty() || (kind == Fetch.REFRESH && fresh == token) ->
                finish(ConnectionState.Closed("expired (no fresh token)", CloseCodes.TOKEN_EXPIRED, refused = true), out)
            else -> {
                token = fresh
                connect(out)
            }
        }
    }

    private fun tokenFailed(message: String, out: MutableList<Action>) {
        val kind = fetching ?: return
        fetching = null
        refetch = kind
        reconnectPending = true
        val delay = backoff.nextDelayMs()
        setState(ConnectionState.Reconnecting(delay, "token_provider_failed: $message", null), out)
        out += Action.StartTimer(TimerKind.RECONNECT, conn, delay)
    }

    private fun connect(out: MutableList<Action>) {
        conn += 1
        active = true
        reconnectPending = false
        lastError = null
        advisedMs = null
        heartbeatSeconds = null
        awaitingPong = false
        val url = target(currentUrl)
        val headers = linkedMapOf("Authorization" to "Bearer $token")
        val subprotocols = when (config.transport) {
            Transport.WS -> listOf(if (config.batch) "clarion.batch.v1" else "clarion.v1")
            Transport.SSE -> emptyList()
        }
        if (config.transport == Transport.SSE) headers["Accept"] = "text/event-stream"
        setState(ConnectionState.Connecting(currentUrl, backoff.attempt), out)
        out += Action.Open(conn, config.transport, url, headers, subprotocols)
    }

    /** [base] with `lastId` (and `batch=1` over SSE) set in its query. */
    fun target(base: String): String {
        val hashAt = base.indexOf('#')
        val noFragment = if (hashAt >= 0) base.substring(0, hashAt) else base
        val queryAt = noFragment.indexOf('?')
        val path = if (queryAt >= 0) noFragment.substring(0, queryAt) else noFragment
        val query = if (queryAt >= 0) noFragment.substring(queryAt + 1) else ""
        val params = query.split('&').filter { it.isNotEmpty() && !it.startsWith("lastId=") }.toMutableList()
        if (config.transport == Transport.SSE && config.batch && params.none { it.startsWith("batch=") }) {
            params += "batch=1"
        }
        lastId?.let { params += "lastId=" + URLEncoder.encode(it, StandardCharsets.UTF_8) }
        return if (params.isEmpty()) path else path + "?" + params.joinToString("&")
    }

    private fun opened(out: MutableList<Action>) {
        when (config.transport) {
            Transport.WS -> {
                val types = config.eventTypes
                if (!types.isNullOrEmpty()) {
                    val list = types.joinToString(",") { org.json.JSONObject.quote(it) }
                    out += Action.Send(conn, "{\"type\":\"subscribe\",\"eventTypes\":[$list]}")
                }
                out += Action.StartTimer(TimerKind.PING, conn, config.pingIntervalMs)
            }
            Transport.SSE -> out += Action.StartTimer(TimerKind.IDLE, conn, idleTimeoutMs())
        }
    }

    private fun idleTimeoutMs(): Long {
        val heartbeat = heartbeatSeconds?.let { it * 1_000L } ?: config.pingIntervalMs
        return heartbeat + config.pongTimeoutMs
    }

    private fun alive(out: MutableList<Action>) {
        when (config.transport) {
            Transport.WS -> if (awaitingPong) {
                awaitingPong = false
                out += Action.CancelTimer(TimerKind.PONG)
            }
            Transport.SSE -> out += Action.StartTimer(TimerKind.IDLE, conn, idleTimeoutMs())
        }
    }

    private fun text(text: String, nowMs: Long, out: MutableList<Action>) {
        alive(out)
        val frame = try {
            Frames.parse(text)
        } catch (_: FrameException) {
            return // not ours to act on: the server never sends one; skip it
        }
        when (frame) {
            is ServerFrame.WelcomeFrame -> {
                val welcome = frame.welcome
                heartbeatSeconds = welcome.heartbeatSeconds
                if (lastId == null && welcome.position != null) lastId = welcome.position
                backoff.connected(nowMs)
                setState(ConnectionState.Connected(currentUrl, welcome), out)
                if (config.transport == Transport.SSE) out += Action.StartTimer(TimerKind.IDLE, conn, idleTimeoutMs())
            }
            is ServerFrame.Events -> for (event in frame.events) {
                lastId = event.id
                out += Action.Event(event)
            }
            is ServerFrame.Reset -> {
                lastId = null
                out += Action.Reset(frame.reason)
            }
            is ServerFrame.Reconnect -> {
                advisedMs = frame.afterMs ?: 0
                if (config.transport == Transport.WS) out += Action.Close(conn, CloseCodes.NORMAL, "reconnect advice")
            }
            is ServerFrame.Error -> lastError = frame
            ServerFrame.Pong, is ServerFrame.Unknown -> Unit
        }
    }

    private fun timer(input: Input.Timer, nowMs: Long, out: MutableList<Action>) {
        when (input.kind) {
            TimerKind.RECONNECT -> if (reconnectPending && !active && input.conn == conn) {
                val again = refetch
                if (again != null) {
                    refetch = null
                    reconnectPending = false
                    fetching = again
                    out += Action.FetchToken
                } else {
                    connect(out)
                }
            }
            TimerKind.PING -> if (live(input.conn)) {
                out += Action.Send(conn, Frames.PING)
                // The deadline counts from the first unanswered ping: later pings do not move it.
                if (!awaitingPong) {
                    awaitingPong = true
                    out += Action.StartTimer(TimerKind.PONG, conn, config.pongTimeoutMs)
                }
                out += Action.StartTimer(TimerKind.PING, conn, config.pingIntervalMs)
            }
            TimerKind.PONG, TimerKind.IDLE -> if (live(input.conn)) {
                out += Action.Abort(conn)
                lost(CloseCodes.ABNORMAL, "heartbeat timeout", null, null, nowMs, out)
            }
        }
    }

    private fun lost(
        code: Int?,
        reason: String,
        httpStatus: Int?,
        httpError: String?,
        nowMs: Long,
        out: MutableList<Action>,
    ) {
        active = false
        cancelHeartbeat(out)
        backoff.disconnected(nowMs)
        val error = lastError
        val effective = if (code == null || code == CloseCodes.ABNORMAL) error?.code ?: code else code
        val message = error?.message?.takeIf { it.isNotEmpty() } ?: httpError ?: reason
        val advice = advisedMs
        when {
            advice != null -> retry(backoff.nextDelayMs(advice), "drain", CloseCodes.DRAIN, out)
            effective == CloseCodes.TOKEN_EXPIRED || (httpStatus == 401 && httpError == "expired") -> refresh(out)
            effective != null && effective in CloseCodes.TERMINAL ->
                finish(ConnectionState.Closed(message, effective, refused = true), out)
            httpStatus != null && httpStatus in TERMINAL_HTTP ->
                finish(ConnectionState.Closed(message, closeCodeOf(httpStatus), refused = true), out)
            else -> {
                val known = effective ?: httpStatus?.let(::closeCodeOf)
                retry(backoff.nextDelayMs(), describe(known, httpStatus, message), known ?: CloseCodes.ABNORMAL, out)
            }
        }
    }

    private fun describe(code: Int?, httpStatus: Int?, message: String): String = when {
        code == CloseCodes.SLOW_CONSUMER -> "slow_consumer"
        code == CloseCodes.OVERLOADED -> "overloaded"
        code == CloseCodes.DRAIN -> "drain"
        httpStatus != null -> "http_$httpStatus"
        message == "heartbeat timeout" -> "heartbeat_timeout"
        code != null -> "closed_$code"
        else -> "connection_lost"
    }

    private fun refresh(out: MutableList<Action>) {
        if (!config.hasTokenProvider) {
            finish(ConnectionState.Closed("expired", CloseCodes.TOKEN_EXPIRED, refused = true), out)
            return
        }
        fetching = Fetch.REFRESH
        setState(ConnectionState.Reconnecting(0, "token_expired", CloseCodes.TOKEN_EXPIRED), out)
        out += Action.FetchToken
    }

    private fun retry(delayMs: Long, reason: String, code: Int?, out: MutableList<Action>) {
        urlIndex = (urlIndex + 1) % config.urls.size
        reconnectPending = true
        setState(ConnectionState.Reconnecting(delayMs, reason, code), out)
        out += Action.StartTimer(TimerKind.RECONNECT, conn, delayMs)
    }

    private fun stop(out: MutableList<Action>) {
        if (active) out += Action.Close(conn, CloseCodes.NORMAL, "client closed")
        active = false
        finish(ConnectionState.Closed("closed by client", CloseCodes.NORMAL, refused = false), out)
    }

    private fun finish(closed: ConnectionState.Closed, out: MutableList<Action>) {
        terminal = true
        reconnectPending = false
        fetching = null
        refetch = null
        for (kind in TimerKind.entries) out += Action.CancelTimer(kind)
        setState(closed, out)
    }

    private fun cancelHeartbeat(out: MutableList<Action>) {
        awaitingPong = false
        out += Action.CancelTimer(TimerKind.PING)
        out += Action.CancelTimer(TimerKind.PONG)
        out += Action.CancelTimer(TimerKind.IDLE)
    }

    private fun setState(next: ConnectionState, out: MutableList<Action>) {
        state = next
        out += Action.State(next)
    }

    /**
     * The WebSocket close code of an HTTP refusal's reason (SSE keeps HTTP statuses), so
     * both transports report a refusal alike: 401 → 4001, 403 → 4003, 503 → 4013.
     */
    private fun closeCodeOf(status: Int): Int = when (status) {
        401 -> CloseCodes.UNAUTHORIZED
        403 -> CloseCodes.FORBIDDEN
        503 -> CloseCodes.OVERLOADED
        else -> status
    }

    companion object {
        /** HTTP refusals before the upgrade that retrying cannot fix (401 `expired` aside). */
        val TERMINAL_HTTP: Set<Int> = setOf(401, 403, 414, 431)
    }
}
