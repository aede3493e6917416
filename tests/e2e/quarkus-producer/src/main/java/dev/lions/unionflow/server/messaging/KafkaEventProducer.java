package dev.lions.unionflow.server.messaging;

import java.time.LocalDateTime;
import java.util.HashMap;
import java.util.Map;
import java.util.UUID;

import jakarta.enterprise.context.ApplicationScoped;

import org.eclipse.microprofile.reactive.messaging.Channel;
import org.eclipse.microprofile.reactive.messaging.Emitter;
import org.jboss.logging.Logger;

import io.smallrye.reactive.messaging.kafka.Record;

/**
 * UnionFlow's producer as the seed describes it (Task #6, KafkaEventProducer.java): one
 * emitter per topic, events built by {@code buildEvent(type, organizationId, data)} with a
 * {@link LocalDateTime} timestamp, records keyed by the entity id. Clarion's workers read
 * these records as they are: nothing in this class knows about Clarion.
 */
@ApplicationScoped
public class KafkaEventProducer {

    private static final Logger LOG = Logger.getLogger(KafkaEventProducer.class);

    @Channel("finance-approvals-out")
    Emitter<Record<String, Map<String, Object>>> financeApprovalsEmitter;

    @Channel("dashboard-stats-out")
    Emitter<Record<String, Map<String, Object>>> dashboardStatsEmitter;

    @Channel("notifications-out")
    Emitter<Record<String, Map<String, Object>>> notificationsEmitter;

    @Channel("members-events-out")
    Emitter<Record<String, Map<String, Object>>> membersEventsEmitter;

    @Channel("contributions-events-out")
    Emitter<Record<String, Map<String, Object>>> contributionsEventsEmitter;

    public void publishApprovalPending(UUID approvalId, String organizationId, Map<String, Object> data) {
        var event = buildEvent("APPROVAL_PENDING", organizationId, data);
        publishToChannel(financeApprovalsEmitter, approvalId.toString(), event, "finance-approvals");
    }

    public void publishApprovalApproved(UUID approvalId, String organizationId, Map<String, Object> data) {
        var event = buildEvent("APPROVAL_APPROVED", organizationId, data);
        publishToChannel(financeApprovalsEmitter, approvalId.toString(), event, "finance-approvals");
    }

    public void publishApprovalRejected(UUID approvalId, String organizationId, Map<String, Object> data) {
        var event = buildEvent("APPROVAL_REJECTED", organizationId, data);
        publishToChannel(financeApprovalsEmitter, approvalId.toString(), event, "finance-approvals");
    }

    public void publishDashboardStatsUpdate(String organizationId, Map<String, Object> stats) {
        var event = buildEvent("DASHBOARD_STATS_UPDATED", organizationId, stats);
        publishToChannel(dashboardStatsEmitter, organizationId, event, "dashboard-stats");
    }

    public void publishKpiUpdate(String organizationId, Map<String, Object> kpi) {
        var event = buildEvent("KPI_UPDATED", organizationId, kpi);
        publishToChannel(dashboardStatsEmitter, organizationId, event, "dashboard-stats");
    }

    public void publishUserNotification(String userId, String organizationId, Map<String, Object> notification) {
        var event = buildEvent("USER_NOTIFICATION", organizationId, notification);
        event.put("userId", userId);
        publishToChannel(notificationsEmitter, userId, event, "notifications");
    }

    public void publishBroadcastNotification(String organizationId, Map<String, Object> notification) {
        var event = buildEvent("BROADCAST_NOTIFICATION", organizationId, notification);
        publishToChannel(notificationsEmitter, organizationId, event, "notifications");
    }

    public void publishMemberCreated(UUID memberId, String organizationId, Map<String, Object> member) {
        var event = buildEvent("MEMBER_CREATED", organizationId, member);
        publishToChannel(membersEventsEmitter, memberId.toString(), event, "members-events");
    }

    public void publishMemberUpdated(UUID memberId, String organizationId, Map<String, Object> member) {
        var event = buildEvent("MEMBER_UPDATED", organizationId, member);
        publishToChannel(membersEventsEmitter, memberId.toString(), event, "members-events");
    }

    public void publishContributionPaid(UUID contributionId, String organizationId, Map<String, Object> contribution) {
        var event = buildEvent("CONTRIBUTION_PAID", organizationId, contribution);
        publishToChannel(contributionsEventsEmitter, contributionId.toString(), event, "contributions-events");
    }

    Map<String, Object> buildEvent(String type, String organizationId, Map<String, Object> data) {
        Map<String, Object> event = new HashMap<>();
        event.put("type", type);
        event.put("organizationId", organizationId);
        event.put("timestamp", LocalDateTime.now());
        event.put("data", data);
        return event;
    }

    void publishToChannel(Emitter<Record<String, Map<String, Object>>> emitter, String key,
            Map<String, Object> event, String channelName) {
        try {
            emitter.send(Record.of(key, event));
            LOG.debugf("Event %s published to %s", event.get("type"), channelName);
        } catch (Exception e) {
            LOG.errorf(e, "Failed to publish event %s to %s", event.get("type"), channelName);
        }
    }
}
