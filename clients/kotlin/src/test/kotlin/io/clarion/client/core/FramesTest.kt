package io.clarion.client.core

import org.json.JSONObject
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.assertThrows

class FramesTest {
    @Test
    fun `welcome carries the replica, the heartbeat and the position`() {
        val frame = Frames.parse(
            """{"type":"welcome","connectionId":"3fa2c1-17","replicaId":"w1","heartbeatSeconds":25,""" +
                """"resumable":true,"batch":false,"position":"AQCx"}""",
        )
        val welcome = (frame as ServerFrame.WelcomeFrame).welcome
        assertEquals("3fa2c1-17", welcome.connectionId)
        assertEquals("w1", welcome.replicaId)
        assertEquals(25, welcome.heartbeatSeconds)
        assertEquals(true, welcome.resumable)
        assertEquals("AQCx", welcome.position)
    }

    @Test
    fun `an event frame is one typed event`() {
        val frame = Frames.parse(
            """{"type":"event","id":"c1","topic":"t","eventType":"APPROVAL_PENDING","organizationId":"org-42",""" +
                """"data":{"seq":7,"key":"org-42"},"ts":1773482400000,"kafkaTs":1773482400012}""",
        ) as ServerFrame.Events
        val event = frame.events.single()
        assertEquals("c1", event.id)
        assertEquals("APPROVAL_PENDING", event.eventType)
        assertEquals("org-42", event.organizationId)
        assertNull(event.userId)
        assertEquals(7, (event.data as JSONObject).getInt("seq"))
        assertEquals(1773482400000L, event.ts)
        assertEquals(1773482400012L, event.kafkaTs)
    }

    @Test
    fun `a batch frame unpacks into single events in order`() {
        val frame = Frames.parse(
            """{"type":"batch","events":[""" +
                """{"type":"event","id":"a","data":{"seq":1}},""" +
                """{"type":"event","id":"b","data":{"seq":2}},""" +
                """{"type":"event","id":"c","organizationId":null,"data":{"seq":3}}]}""",
        ) as ServerFrame.Events
        assertTrue(frame.batch)
        assertEquals(listOf("a", "b", "c"), frame.events.map { it.id })
        assertEquals(listOf(1, 2, 3), frame.events.map { (it.data as JSONObject).getInt("seq") })
        assertNull(frame.events[2].organizationId)
    }

    @Test
    fun `control frames`() {
        assertEquals(ServerFrame.Pong, Frames.parse("""{"type":"pong"}"""))
        assertEquals(ServerFrame.Reconnect("drain", 1840), Frames.parse("""{"type":"reconnect","reason":"drain","afterMs":1840}"""))
        assertEquals(ServerFrame.Reset("too_far_behind"), Frames.parse("""{"type":"reset","reason":"too_far_behind"}"""))
        assertEquals(ServerFrame.Error(4004, "expired"), Frames.parse("""{"type":"error","code":4004,"message":"expired"}"""))
        assertEquals(ServerFrame.Unknown("future"), Frames.parse("""{"type":"future","x":1}"""))
    }

    @Test
    fun `frames the client cannot use are refused with a clear error`() {
        assertTrue(assertThrows<FrameException> { Frames.parse("pong") }.message!!.contains("not a JSON object"))
        assertThrows<FrameException> { Frames.parse("""{"type":"event","data":{}}""") }
        assertThrows<FrameException> { Frames.parse("""{"type":"batch"}""") }
        assertThrows<FrameException> { Frames.parse("""{"type":"batch","events":[1]}""") }
    }

    @Test
    fun `HTTP refusal bodies`() {
        assertEquals("expired", Frames.httpError("""{"error":"expired","message":"expired"}"""))
        assertNull(Frames.httpError("Bad Gateway"))
        assertNull(Frames.httpError(null))
    }
}
