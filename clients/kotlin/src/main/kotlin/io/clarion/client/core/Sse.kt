package io.clarion.client.core

/** One Server-Sent Events message: its `id:` (if any) and its `data:` lines joined. */
data class SseMessage(val id: String?, val event: String?, val data: String)

/**
 * An incremental parser of a `text/event-stream`, fed one line at a time (without its
 * line ending). Comment lines (`: ping`) yield nothing here; the edge counts them as
 * liveness before feeding.
 */
class SseParser {
    private val data = StringBuilder()
    private var hasData = false
    private var id: String? = null
    private var event: String? = null

    /** Feeds a line; returns the message it completes (a blank line ends one), or null. */
    fun feed(line: String): SseMessage? {
        if (line.isEmpty()) return dispatch()
        if (line.startsWith(":")) return null
        val colon = line.indexOf(':')
        val field = if (colon < 0) line else line.substring(0, colon)
        var value = if (colon < 0) "" else line.substring(colon + 1)
        if (value.startsWith(" ")) value = value.substring(1)
        when (field) {
            "data" -> {
                if (hasData) data.append('\n')
                data.append(value)
                hasData = true
            }
            "id" -> if (!value.contains('\u0000')) id = value
            "event" -> event = value
            else -> Unit // "retry" and unknown fields: ignored
        }
        return null
    }

    private fun dispatch(): SseMessage? {
        val message = if (hasData) SseMessage(id, event, data.toString()) else null
        data.setLength(0)
        hasData = false
        event = null
        id = null
        return message
    }
}
