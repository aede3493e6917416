package io.clarion.client.core

import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Test

class SseParserTest {
    private fun feedAll(parser: SseParser, text: String): List<SseMessage> =
        text.split("\n").mapNotNull { parser.feed(it.removeSuffix("\r")) }

    @Test
    fun `messages end at a blank line and carry their id`() {
        val messages = feedAll(
            SseParser(),
            "id: c1\ndata: {\"type\":\"welcome\"}\n\n: ping\n\nid: c2\ndata: {\"type\":\"event\",\n" +
                "data: \"id\":\"c2\"}\n\n",
        )
        assertEquals(
            listOf(
                SseMessage("c1", null, "{\"type\":\"welcome\"}"),
                SseMessage("c2", null, "{\"type\":\"event\",\n\"id\":\"c2\"}"),
            ),
            messages,
        )
    }

    @Test
    fun `comments and fields without data yield nothing`() {
        val parser = SseParser()
        assertNull(parser.feed(": ping"))
        assertNull(parser.feed(""))
        assertNull(parser.feed("retry: 1000"))
        assertNull(parser.feed("id: x"))
        assertNull(parser.feed(""))
    }

    @Test
    fun `CRLF lines, a value without a space and an event name`() {
        val messages = feedAll(SseParser(), "event: ping\r\ndata:{}\r\n\r\n")
        assertEquals(listOf(SseMessage(null, "ping", "{}")), messages)
    }
}
