#!/bin/sh
# One-shot topic creation for the compose stack (runs in the apache/kafka image).
# Usage: create-topics.sh TOPICS_FILE
# TOPICS_FILE lists one topic per line as "name kind" (kind: audio | data); '#' starts a comment.
# Every topic gets $PARTITIONS partitions (= the maximum number of workers); audio topics also get
# retention.ms=$AUDIO_RETENTION_MS. Re-running is safe (--if-not-exists). A topic that already
# exists with another partition count is an error, not silently altered: calls are keyed to
# partitions and the workers' table changelogs must have as many partitions as their source
# topics, so re-partitioning is a planned migration (deploy/SIZING.md), never a side effect.
set -eu
: "${BOOTSTRAP:?}" "${PARTITIONS:?}" "${AUDIO_RETENTION_MS:?}"
RF="${REPLICATION_FACTOR:-1}"
BIN=/opt/kafka/bin
FILE="${1:?usage: create-topics.sh TOPICS_FILE}"

grep -v '^[[:space:]]*#' "$FILE" | while read -r name kind; do
  [ -n "${name:-}" ] || continue
  case "$kind" in
    audio) config="--config retention.ms=$AUDIO_RETENTION_MS --config cleanup.policy=delete" ;;
    data) config="" ;;
    *) echo "unknown topic kind '$kind' for $name" >&2; exit 1 ;;
  esac
  # shellcheck disable=SC2086
  "$BIN/kafka-topics.sh" --bootstrap-server "$BOOTSTRAP" --create --if-not-exists \
    --topic "$name" --partitions "$PARTITIONS" --replication-factor "$RF" $config
  current=$("$BIN/kafka-topics.sh" --bootstrap-server "$BOOTSTRAP" --describe --topic "$name" \
    | sed -n 's/.*PartitionCount: *\([0-9]*\).*/\1/p' | head -n 1)
  if [ "$current" != "$PARTITIONS" ]; then
    echo "topic $name has $current partitions, expected $PARTITIONS (see deploy/SIZING.md)" >&2
    exit 1
  fi
  if [ "$kind" = audio ]; then
    "$BIN/kafka-configs.sh" --bootstrap-server "$BOOTSTRAP" --alter --entity-type topics \
      --entity-name "$name" --add-config "retention.ms=$AUDIO_RETENTION_MS"
  fi
done
echo "topics ready"
