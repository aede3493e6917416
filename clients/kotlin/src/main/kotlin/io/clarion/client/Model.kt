package io.clarion.client

import org.json.JSONObject

/** How the client reaches the workers. */
enum class Transport { WS, SSE }

/** One business event, unpacked from an `event` frame or a `batch` frame. */
data class ClarionEvent(
    /** The opaque resume cursor: the client keeps the last one and sends it as `lastId`. */
    val id: String,
    val topic: String?,
    val eventType: String?,
    val organizationId: String?,
    val userId: String?,
    /** The producer's `data` object (JSONObject), or whatever JSON value it was. */
    val data: Any?,
    /** The producer's timestamp, epoch ms. */
    val ts: Long?,
    /** The Kafka record timestamp, epoch ms. */
    val kafkaTs: Long?,
    /** The whole frame, for fields this version does not know. */
    val json: JSONObject,
)

/** The `welcome` frame that opens every session. */
data class Welcome(
    val connectionId: String?,
    val replicaId: String?,
    val heartbeatSeconds: Int?,
    val resumable: Boolean,
    val batch: Boolean,
    val position: String?,
)

/** The connection's state. [Closed] is terminal: the client never reconnects after it. */
sealed interface ConnectionState {
    /** Created, not started. */
    data object Idle : ConnectionState

    /** Opening a connection to [url] (attempt [attempt] since the last welcome). */
    data class Connecting(val url: String, val attempt: Int) : ConnectionState

    /** The server's `welcome` arrived: events flow. */
    data class Connected(val url: String, val welcome: Welcome) : ConnectionState

    /** Disconnected; the next attempt starts in [delayMs]. [reason] says why. */
    data class Reconnecting(val delayMs: Long, val reason: String, val code: Int?) : ConnectionState

    /**
     * Stopped for good. [refused] is true when the server refused us for a reason that
     * retrying cannot fix (a bad or expired token with no fresh one, a forbidden origin,
     * a protocol error): [code] is the close code (or HTTP status) and [reason] the
     * server's `error` message. False after [ClarionClient.close].
     */
    data class Closed(val reason: String, val code: Int?, val refused: Boolean) : ConnectionState
}

/** The protocol's close codes (docs/protocol.md). */
object CloseCodes {
    const val NORMAL = 1000
    const val GOING_AWAY = 1001
    const val PROTOCOL_ERROR = 1002
    const val UNSUPPORTED_DATA = 1003
    const val ABNORMAL = 1006
    const val INVALID_DATA = 1007
    const val MESSAGE_TOO_BIG = 1009
    const val INTERNAL_ERROR = 1011
    const val UNAUTHORIZED = 4001
    const val FORBIDDEN = 4003
    const val TOKEN_EXPIRED = 4004
    const val SLOW_CONSUMER = 4008
    const val BAD_FRAME = 4009
    const val OVERLOADED = 4013
    const val DRAIN = 4100

    /** Codes that retrying cannot fix: stop and report. */
    val TERMINAL: Set<Int> = setOf(
        PROTOCOL_ERROR, UNSUPPORTED_DATA, INVALID_DATA, MESSAGE_TOO_BIG,
        UNAUTHORIZED, FORBIDDEN, BAD_FRAME,
    )
}
