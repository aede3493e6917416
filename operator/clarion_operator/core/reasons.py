"""Condition and Event reasons: one CamelCase word per situation, saying what to do next.

Kubernetes API conventions want ``reason`` to be a machine-readable CamelCase token; the
same tokens name the Events the operator emits, so ``kubectl get events`` and
``kubectl describe rtc`` tell one story. Errors (``errors.py``) carry one of these so the
kopf edge can write the status without translating anything.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Every reason the operator may put on a condition or an Event."""

    # Everything asked for is in place.
    RECONCILED = "Reconciled"
    # Work is in flight; nothing is wrong yet.
    RECONCILING = "Reconciling"
    # The spec cannot be acted on; fix the resource (PermanentError).
    INVALID_SPEC = "InvalidSpec"
    # Kafka did not answer (connection refused, timeout, no controller): retried.
    KAFKA_UNREACHABLE = "KafkaUnreachable"
    # Kafka answered with an error that retrying alone may not cure.
    KAFKA_ERROR = "KafkaError"
    # The operator's Kafka principal lacks an ACL.
    KAFKA_AUTHORIZATION_FAILED = "KafkaAuthorizationFailed"
    # Kafka refused a topic config key or value.
    INVALID_TOPIC_CONFIG = "InvalidTopicConfig"
    # Kafka refused the replication factor (for example more than the broker count).
    INVALID_REPLICATION_FACTOR = "InvalidReplicationFactor"
    # Kafka refused the partition count.
    INVALID_PARTITIONS = "InvalidPartitions"
    # The spec asks for something Kafka cannot do in place (a partition decrease).
    NOT_SUPPORTED = "NotSupported"
    # Another, older RealtimeChannel owns the topic.
    RESOURCE_CONFLICT = "ResourceConflict"
    # The replication factor differs from the spec; the operator reports, never reassigns.
    REPLICATION_FACTOR_CHANGE_NOT_APPLIED = "ReplicationFactorChangeNotApplied"
    # Topic actions were issued this round.
    TOPICS_CREATING = "TopicsCreating"
    TOPICS_UPDATING = "TopicsUpdating"
    # Per-topic Events.
    TOPIC_CREATED = "TopicCreated"
    TOPIC_UPDATED = "TopicUpdated"
    TOPIC_DELETED = "TopicDeleted"
    # A topic that already existed is now owned by the channel (not created by it).
    TOPIC_ADOPTED = "TopicAdopted"
    # Worker Deployment state.
    WORKERS_PROGRESSING = "WorkersProgressing"
    WORKERS_READY = "WorkersReady"
    WORKERS_UNAVAILABLE = "WorkersUnavailable"
    # A worker pod fails (refuses its settings, crash-loops, cannot pull its image): the
    # message carries the pod's own words.
    WORKERS_FAILING = "WorkersFailing"
    # The Kubernetes API refused or conflicted (409, 429, 5xx): retried.
    API_CONFLICT = "ApiConflict"
    KUBERNETES_API_ERROR = "KubernetesApiError"
    # The channel's HTTPRoute or Ingress is in place and something serves it.
    EXPOSED = "Exposed"
    # exposure type gateway on a cluster without the Gateway API CRDs: install them.
    GATEWAY_API_NOT_INSTALLED = "GatewayAPINotInstalled"
    # The named Gateway or IngressClass does not exist: create it or fix the name.
    GATEWAY_NOT_FOUND = "GatewayNotFound"
    INGRESS_CLASS_NOT_FOUND = "IngressClassNotFound"
    # spec.monitoring.serviceMonitor: the ServiceMonitor is applied; or the cluster does not
    # serve the monitoring.coreos.com/v1 ServiceMonitor API (install the Prometheus
    # Operator's CRDs), and the pods carry prometheus.io scrape annotations instead.
    SERVICE_MONITOR_APPLIED = "ServiceMonitorApplied"
    SERVICE_MONITOR_UNAVAILABLE = "ServiceMonitorUnavailable"
    # TopicsHealthy (core/health.py): every replica in sync; replicas out of sync (a broker
    # down or lagging: reads and writes go on); fewer in sync than min.insync.replicas
    # (producers with acks=all are refused); partitions without a leader (nothing is
    # delivered from them: the only one of these that makes the channel not Ready).
    TOPICS_HEALTHY = "TopicsHealthy"
    UNDER_REPLICATED_PARTITIONS = "UnderReplicatedPartitions"
    BELOW_MIN_IN_SYNC_REPLICAS = "BelowMinInSyncReplicas"
    PARTITIONS_OFFLINE = "PartitionsOffline"
    # Deletion waits on Kafka; the force-delete annotation releases it.
    DELETION_BLOCKED = "DeletionBlocked"
    # The force-delete annotation released the finalizer; Kafka was not touched.
    DELETION_FORCED = "DeletionForced"
