package dev.lions.unionflow.server.messaging;

import java.io.FileOutputStream;
import java.io.IOException;
import java.io.OutputStreamWriter;
import java.io.PrintWriter;
import java.nio.charset.StandardCharsets;
import java.time.LocalDateTime;
import java.time.ZoneId;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicInteger;

import org.apache.kafka.clients.producer.ProducerInterceptor;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;

import com.fasterxml.jackson.databind.ObjectMapper;

/**
 * Test-only Kafka producer interceptor (configured in application.properties): sees each
 * record before serialization, so it reads the producer's own timestamp object, and writes
 * one JSON line per record to the file named by {@code -Dclarion.sent-file}: topic, key,
 * seq, the timestamp's Java class and text, and the instant it stands for (epoch ms).
 * Acknowledgements are counted so the driver can wait for every record to be written.
 */
public class SentRecords implements ProducerInterceptor<Object, Object> {

    private static final ObjectMapper JSON = new ObjectMapper();
    private static final Map<String, Long> EXPECTED = new ConcurrentHashMap<>();
    private static final AtomicInteger ACKED = new AtomicInteger();
    private static final AtomicInteger FAILED = new AtomicInteger();
    private static PrintWriter out;

    static void expect(Object seq, Long instantMs) {
        EXPECTED.put(String.valueOf(seq), instantMs == null ? Long.MIN_VALUE : instantMs);
    }

    public static int acked() {
        return ACKED.get();
    }

    public static int failed() {
        return FAILED.get();
    }

    @Override
    @SuppressWarnings("unchecked")
    public ProducerRecord<Object, Object> onSend(ProducerRecord<Object, Object> record) {
        Map<String, Object> event = (Map<String, Object>) record.value();
        Map<String, Object> data = (Map<String, Object>) event.get("data");
        Object seq = data.get("seq");
        Object timestamp = event.get("timestamp");
        Long instantMs;
        if (timestamp instanceof LocalDateTime local) {
            // The seed's buildEvent: LocalDateTime.now() in the JVM's zone.
            instantMs = local.atZone(ZoneId.systemDefault()).toInstant().toEpochMilli();
        } else {
            Long expected = EXPECTED.remove(String.valueOf(seq));
            instantMs = expected == null || expected == Long.MIN_VALUE ? null : expected;
        }
        Map<String, Object> line = new LinkedHashMap<>();
        line.put("seq", seq);
        line.put("topic", record.topic());
        line.put("key", record.key());
        line.put("type", event.get("type"));
        line.put("organizationId", event.get("organizationId"));
        line.put("userId", event.get("userId"));
        line.put("timestampClass", timestamp == null ? null : timestamp.getClass().getName());
        line.put("timestampText", String.valueOf(timestamp));
        line.put("instantMs", instantMs);
        write(line);
        return record;
    }

    private static synchronized void write(Map<String, Object> line) {
        try {
            if (out == null) {
                String path = System.getProperty("clarion.sent-file", "sent.jsonl");
                out = new PrintWriter(new OutputStreamWriter(new FileOutputStream(path, true), StandardCharsets.UTF_8));
            }
            out.println(JSON.writeValueAsString(line));
            out.flush();
        } catch (IOException e) {
            throw new IllegalStateException(e);
        }
    }

    @Override
    public void onAcknowledgement(RecordMetadata metadata, Exception exception) {
        (exception == null ? ACKED : FAILED).incrementAndGet();
    }

    @Override
    public void close() {
    }

    @Override
    public void configure(Map<String, ?> configs) {
    }
}
