package dev.lions.unionflow.server.messaging;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.Map;
import java.util.UUID;

import jakarta.inject.Inject;

import com.fasterxml.jackson.core.type.TypeReference;
import com.fasterxml.jackson.databind.ObjectMapper;

import io.quarkus.runtime.QuarkusApplication;
import io.quarkus.runtime.annotations.QuarkusMain;

/**
 * Test-only main: reads a plan from standard input, one JSON object per line
 * ({@code {"call": "publishApprovalPending", "id": ..., "organizationId": ..., "data": {...}}}),
 * calls {@link KafkaEventProducer} (or {@link TimestampForms}) for each, then waits until
 * Kafka acknowledged every record and exits (1 if any failed or timed out).
 */
@QuarkusMain
public class ProducerDriver implements QuarkusApplication {

    @Inject
    KafkaEventProducer producer;

    @Inject
    TimestampForms forms;

    @Inject
    ObjectMapper mapper;

    @Override
    public int run(String... args) throws Exception {
        int sent = 0;
        var in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        for (String line = in.readLine(); line != null; line = in.readLine()) {
            if (line.isBlank()) {
                continue;
            }
            Map<String, Object> step = mapper.readValue(line, new TypeReference<>() {});
            call(step);
            sent++;
        }
        long deadline = System.nanoTime() + 60_000_000_000L;
        while (SentRecords.acked() + SentRecords.failed() < sent && System.nanoTime() < deadline) {
            Thread.sleep(20);
        }
        System.out.printf("producer done: sent %d, acked %d, failed %d%n", sent, SentRecords.acked(),
                SentRecords.failed());
        return SentRecords.acked() == sent ? 0 : 1;
    }

    @SuppressWarnings("unchecked")
    private void call(Map<String, Object> step) {
        String call = (String) step.get("call");
        String id = (String) step.get("id");
        String org = (String) step.get("organizationId");
        String user = (String) step.get("userId");
        Map<String, Object> data = (Map<String, Object>) step.get("data");
        switch (call) {
            case "publishApprovalPending" -> producer.publishApprovalPending(UUID.fromString(id), org, data);
            case "publishApprovalApproved" -> producer.publishApprovalApproved(UUID.fromString(id), org, data);
            case "publishApprovalRejected" -> producer.publishApprovalRejected(UUID.fromString(id), org, data);
            case "publishDashboardStatsUpdate" -> producer.publishDashboardStatsUpdate(org, data);
            case "publishKpiUpdate" -> producer.publishKpiUpdate(org, data);
            case "publishUserNotification" -> producer.publishUserNotification(user, org, data);
            case "publishBroadcastNotification" -> producer.publishBroadcastNotification(org, data);
            case "publishMemberCreated" -> producer.publishMemberCreated(UUID.fromString(id), org, data);
            case "publishMemberUpdated" -> producer.publishMemberUpdated(UUID.fromString(id), org, data);
            case "publishContributionPaid" -> producer.publishContributionPaid(UUID.fromString(id), org, data);
            case "timestampForm" -> forms.publishApprovalPending((String) step.get("form"), UUID.fromString(id), org, data);
            default -> throw new IllegalArgumentException("unknown call " + call);
        }
    }
}
