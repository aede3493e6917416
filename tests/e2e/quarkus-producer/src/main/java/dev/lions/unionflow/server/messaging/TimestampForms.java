package dev.lions.unionflow.server.messaging;

import java.time.Instant;
import java.time.LocalDateTime;
import java.time.OffsetDateTime;
import java.time.ZoneId;
import java.time.ZonedDateTime;
import java.util.Date;
import java.util.Map;
import java.util.UUID;

import jakarta.enterprise.context.ApplicationScoped;
import jakarta.inject.Inject;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.datatype.jsr310.JavaTimeModule;

import io.quarkus.arc.ClientProxy;

/**
 * Test-only: the same event shape and emitters as {@link KafkaEventProducer}, with the
 * timestamp written the other ways Java code writes one. Each form is derived from one
 * {@link Instant}, whose epoch milliseconds are recorded for the check
 * ({@link SentRecords#expect}).
 */
@ApplicationScoped
public class TimestampForms {

    /** What an ObjectMapper with default settings writes (JavaTimeModule registered). */
    private static final ObjectMapper DEFAULT_MAPPER = new ObjectMapper().registerModule(new JavaTimeModule());

    @Inject
    KafkaEventProducer producer;

    public void publishApprovalPending(String form, UUID approvalId, String organizationId, Map<String, Object> data) {
        Instant now = Instant.now();
        Object timestamp = timestamp(form, now);
        long expected = form.equals("epoch-s") ? now.getEpochSecond() * 1000 : now.toEpochMilli();
        // The bean itself, not its client proxy, whose fields are never injected.
        KafkaEventProducer seed = ClientProxy.unwrap(producer);
        var event = seed.buildEvent("APPROVAL_PENDING", organizationId, data);
        event.put("timestamp", timestamp);
        SentRecords.expect(data.get("seq"), form.equals("date-tostring") ? null : expected);
        seed.publishToChannel(seed.financeApprovalsEmitter, approvalId.toString(), event, "finance-approvals");
    }

    static Object timestamp(String form, Instant now) {
        ZoneId zone = ZoneId.systemDefault();
        return switch (form) {
            case "local-tostring" -> LocalDateTime.ofInstant(now, zone).toString();
            case "local-array" -> DEFAULT_MAPPER.valueToTree(LocalDateTime.ofInstant(now, zone));
            case "zoned-region" -> ZonedDateTime.ofInstant(now, zone).toString();
            case "offset" -> OffsetDateTime.ofInstant(now, zone).toString();
            case "instant-z" -> now.toString();
            case "epoch-ms" -> now.toEpochMilli();
            case "epoch-s" -> now.getEpochSecond();
            case "decimal-s" -> DEFAULT_MAPPER.valueToTree(now);
            // java.util.Date#toString: "Mon Nov 30 07:10:38 CET 2026". Not accepted: the
            // worker counts it and falls back to the Kafka timestamp.
            case "date-tostring" -> Date.from(now).toString();
            default -> throw new IllegalArgumentException("unknown timestamp form " + form);
        };
    }
}
