package local.replicator;

import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewPartitionReassignment;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.common.ElectionType;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.TopicPartitionInfo;

/**
 * What the fault suite asks of a Kafka cluster, through Kafka's own Admin API (what
 * kafka-transactions.sh, kafka-consumer-groups.sh, kafka-reassign-partitions.sh and
 * kafka-leader-election.sh do). Run by scripts/kafka-admin.sh; prints one answer on stdout.
 *
 *   transaction-coordinator BOOTSTRAP TRANSACTIONAL_ID   the broker id coordinating it
 *   group-coordinator BOOTSTRAP GROUP                    the broker id coordinating the group
 *   move-leaders BOOTSTRAP TOPIC...                      every partition's replica list rotated
 *                                                        (same replicas) until an in-sync one
 *                                                        other than the leader is preferred, then a
 *                                                        preferred leader election: prints
 *                                                        "partition old->new" per partition
 *   wait-in-sync BOOTSTRAP SECONDS                       waits until no partition of any topic has
 *                                                        fewer in-sync replicas than replicas
 */
public final class ClusterAdmin {
    private static final long TIMEOUT_S = 30;

    public static void main(String[] args) throws Exception {
        if (args.length < 2) {
            usage();
        }
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[1]);
        props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "10000");
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "30000");
        try (Admin admin = Admin.create(props)) {
            switch (args[0]) {
                case "transaction-coordinator" -> {
                    need(args, 3);
                    System.out.println(admin.describeTransactions(List.of(args[2])).description(args[2])
                        .get(TIMEOUT_S, TimeUnit.SECONDS).coordinatorId());
                }
                case "group-coordinator" -> {
                    need(args, 3);
                    Node coordinator = admin.describeConsumerGroups(List.of(args[2])).describedGroups().get(args[2])
                        .get(TIMEOUT_S, TimeUnit.SECONDS).coordinator();
                    System.out.println(coordinator.id());
                }
                case "move-leaders" -> {
                    need(args, 3);
                    moveLeaders(admin, List.of(args).subList(2, args.length));
                }
                case "wait-in-sync" -> {
                    need(args, 3);
                    waitInSync(admin, Long.parseLong(args[2]));
                }
                default -> usage();
            }
        }
    }

    private static void moveLeaders(Admin admin, Collection<String> topics) throws Exception {
        Map<String, TopicDescription> described = admin.describeTopics(topics).allTopicNames()
            .get(TIMEOUT_S, TimeUnit.SECONDS);
        Map<TopicPartition, Optional<NewPartitionReassignment>> rotations = new HashMap<>();
        Map<TopicPartition, Integer> before = new HashMap<>();
        for (TopicDescription topic : described.values()) {
            for (TopicPartitionInfo partition : topic.partitions()) {
                List<Integer> replicas = new ArrayList<>();
                partition.replicas().forEach(node -> replicas.add(node.id()));
                Set<Integer> inSync = new HashSet<>();
                partition.isr().forEach(node -> inSync.add(node.id()));
                int leader = partition.leader() == null ? -1 : partition.leader().id();
                // Rotated until an in-sync replica other than the leader comes first: the
                // preferred leader the election then moves leadership to.
                int turns = 0;
                do {
                    replicas.add(replicas.remove(0));
                    turns++;
                } while (turns < replicas.size() && (replicas.get(0) == leader || !inSync.contains(replicas.get(0))));
                if (replicas.size() < 2 || replicas.get(0) == leader) {
                    continue;
                }
                TopicPartition tp = new TopicPartition(topic.name(), partition.partition());
                rotations.put(tp, Optional.of(new NewPartitionReassignment(replicas)));
                before.put(tp, partition.leader() == null ? -1 : partition.leader().id());
            }
        }
        if (rotations.isEmpty()) {
            throw new IllegalStateException("no partition with more than one replica in " + topics);
        }
        // The same replicas in another order: nothing is copied, the reassignment completes at once.
        admin.alterPartitionReassignments(rotations).all().get(TIMEOUT_S, TimeUnit.SECONDS);
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(TIMEOUT_S);
        while (!admin.listPartitionReassignments(rotations.keySet()).reassignments()
                .get(TIMEOUT_S, TimeUnit.SECONDS).isEmpty()) {
            if (System.nanoTime() > deadline) {
                throw new IllegalStateException("the reassignment did not complete within " + TIMEOUT_S + " s");
            }
            Thread.sleep(200);
        }
        // A partition whose new preferred leader is out of sync keeps its leader (the election
        // reports it): the move is what Kafka allows, as kafka-leader-election does.
        Map<TopicPartition, Optional<Throwable>> results = admin.electLeaders(ElectionType.PREFERRED, rotations.keySet())
            .partitions().get(TIMEOUT_S, TimeUnit.SECONDS);
        Map<String, TopicDescription> after = admin.describeTopics(topics).allTopicNames()
            .get(TIMEOUT_S, TimeUnit.SECONDS);
        for (TopicDescription topic : after.values()) {
            for (TopicPartitionInfo partition : topic.partitions()) {
                TopicPartition tp = new TopicPartition(topic.name(), partition.partition());
                if (!before.containsKey(tp)) {
                    continue;
                }
                String now = partition.leader() == null ? "none" : Integer.toString(partition.leader().id());
                String note = results.getOrDefault(tp, Optional.empty()).map(e -> " (" + e.getMessage() + ")").orElse("");
                System.out.println(tp + " " + before.get(tp) + "->" + now + note);
            }
        }
    }

    private static void waitInSync(Admin admin, long seconds) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(seconds);
        while (true) {
            Set<String> names = new HashSet<>(admin.listTopics(new org.apache.kafka.clients.admin.ListTopicsOptions()
                .listInternal(true)).names().get(TIMEOUT_S, TimeUnit.SECONDS));
            int behind = 0;
            for (TopicDescription topic : admin.describeTopics(names).allTopicNames().get(TIMEOUT_S, TimeUnit.SECONDS)
                    .values()) {
                for (TopicPartitionInfo partition : topic.partitions()) {
                    if (partition.isr().size() < partition.replicas().size()) {
                        behind++;
                    }
                }
            }
            if (behind == 0) {
                System.out.println("in sync");
                return;
            }
            if (System.nanoTime() > deadline) {
                System.out.println(behind + " partitions under-replicated");
                System.exit(1);
            }
            Thread.sleep(1000);
        }
    }

    private static void need(String[] args, int count) {
        if (args.length < count) {
            usage();
        }
    }

    private static void usage() {
        System.err.println("usage: ClusterAdmin transaction-coordinator|group-coordinator|move-leaders|wait-in-sync "
            + "BOOTSTRAP ARG...");
        System.exit(2);
    }

    private ClusterAdmin() {
    }
}
