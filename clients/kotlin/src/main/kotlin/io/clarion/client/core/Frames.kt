package io.clarion.client.core

import io.clarion.client.ClarionEvent
import io.clarion.client.Welcome
import org.json.JSONException
import org.json.JSONObject

/** A frame from the server, decoded. Unknown types are kept (and ignored) for forward compatibility. */
sealed interface ServerFrame {
    data class WelcomeFrame(val welcome: Welcome) : ServerFrame

    /** An `event` frame (one event) or a `batch` frame (several, in order). */
    data class Events(val events: List<ClarionEvent>, val batch: Boolean) : ServerFrame

    data object Pong : ServerFrame

    data class Reconnect(val reason: String?, val afterMs: Long?) : ServerFrame

    data class Reset(val reason: String) : ServerFrame

    data class Error(val code: Int?, val message: String) : ServerFrame

    data class Unknown(val type: String?) : ServerFrame
}

/** A frame the client cannot use: not JSON, or an event without its id. */
class FrameException(message: String, cause: Throwable? = null) : Exception(message, cause)

object Frames {
    const val PING: String = "{\"type\":\"ping\"}"

    fun parse(text: String): ServerFrame {
        val json = try {
            JSONObject(text)
        } catch (error: JSONException) {
            throw FrameException("frame is not a JSON object: ${text.take(80)}", error)
        }
        return when (val type = json.optString("type", "")) {
            "welcome" -> ServerFrame.WelcomeFrame(
                Welcome(
                    connectionId = json.stringOrNull("connectionId"),
                    replicaId = json.stringOrNull("replicaId"),
                    heartbeatSeconds = if (json.has("heartbeatSeconds")) json.optInt("heartbeatSeconds") else null,
                    resumable = json.optBoolean("resumable", false),
                    batch = json.optBoolean("batch", false),
                    position = json.stringOrNull("position"),
                ),
            )
            "event" -> ServerFrame.Events(listOf(event(json)), batch = false)
            "batch" -> {
                val array = json.optJSONArray("events") ?: throw FrameException("batch frame without events")
                val events = (0 until array.length()).map { index ->
                    val item = array.optJSONObject(index) ?: throw FrameException("batch item $index is not an object")
                    event(item)
                }
                ServerFrame.Events(events, batch = true)
            }
            "pong" -> ServerFrame.Pong
            "reconnect" -> ServerFrame.Reconnect(
                reason = json.stringOrNull("reason"),
                afterMs = if (json.has("afterMs") && !json.isNull("afterMs")) json.optLong("afterMs") else null,
            )
            "reset" -> ServerFrame.Reset(json.stringOrNull("reason") ?: "unknown")
            "error" -> ServerFrame.Error(
                code = if (json.has("code") && !json.isNull("code")) json.optInt("code") else null,
                message = json.stringOrNull("message") ?: "",
            )
            else -> ServerFrame.Unknown(type.ifEmpty { null })
        }
    }

    fun event(json: JSONObject): ClarionEvent {
        val id = json.stringOrNull("id") ?: throw FrameException("event without an id")
        return ClarionEvent(
            id = id,
            topic = json.stringOrNull("topic"),
            eventType = json.stringOrNull("eventType"),
            organizationId = json.stringOrNull("organizationId"),
            userId = json.stringOrNull("userId"),
            data = if (json.has("data") && !json.isNull("data")) json.get("data") else null,
            ts = if (json.has("ts") && !json.isNull("ts")) json.optLong("ts") else null,
            kafkaTs = if (json.has("kafkaTs") && !json.isNull("kafkaTs")) json.optLong("kafkaTs") else null,
            json = json,
        )
    }

    /**
     * An HTTP refusal's body (SSE and pre-upgrade WebSocket refusals): `{"error": ..}`,
     * or null when it is not that shape.
     */
    fun httpError(body: String?): String? {
        if (body.isNullOrBlank()) return null
        return try {
            JSONObject(body).stringOrNull("error")
        } catch (_: JSONException) {
            null
        }
    }

    private fun JSONObject.stringOrNull(key: String): String? =
        if (has(key) && !isNull(key)) optString(key) else null
}
