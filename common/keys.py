"""Every Redis key kube2redis reads or writes is formatted here, nowhere else."""

from dataclasses import dataclass

DEFAULT_PREFIX = "k8s"
# The projectors' consumer group on the stream (the watcher's retention respects it).
DEFAULT_GROUP = "projector"
# The state hash's fields: the object as sent, its resourceVersion and uid.
STATE_OBJECT, STATE_RV, STATE_UID = "object", "rv", "uid"


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names under one prefix (default ``k8s``)."""

    prefix: str = DEFAULT_PREFIX

    @staticmethod
    def member(namespace: str, name: str) -> str:
        """Index member of an object: ``ns:name``, or ``name`` when cluster-scoped."""
        return f"{namespace}:{name}" if namespace else name

    @staticmethod
    def namespace_of(member: str, namespaced: bool) -> str:
        """The namespace in a member. Names may contain ':' (RBAC's "system:..."),
        namespaces (DNS labels) never do; a cluster-scoped member is all name."""
        return member.partition(":")[0] if namespaced else ""

    def state(self, kind: str, namespace: str, name: str) -> str:
        """Hash holding ``object`` and ``rv`` of one live object."""
        return self.state_of(kind, self.member(namespace, name))

    def state_of(self, kind: str, member: str) -> str:
        """The state hash of an index member."""
        return f"{self.prefix}:{kind}:{member}"

    def index(self, kind: str) -> str:
        """Set of members of every stored object of a kind."""
        return f"{self.prefix}:index:{kind}"

    def by(self, kind: str, field: str, value: str) -> str:
        """Set of the members of a kind whose indexed field has this value
        (common/indexes.py declares which; apply.lua and relist.lua keep it)."""
        return f"{self.by_prefix(kind)}{field}:{value}"

    def by_prefix(self, kind: str) -> str:
        """What a kind's index sets' names start with (the scripts append
        ``field:value``)."""
        return f"{self.prefix}:by:{kind}:"

    def counts(self, kind: str) -> str:
        """Hash of a kind's indexed values (joined, e.g. ``Running/default``) ->
        how many stored objects have them."""
        return f"{self.prefix}:counts:{kind}"

    def index_records(self, kind: str) -> str:
        """Hash of member -> the indexed values (joined) the by-sets and counters of a
        kind hold for it: what the scripts move it from. Apart from the state hashes,
        so a lost state hash cannot make an object counted twice or leave a ghost."""
        return f"{self.prefix}:indexed:{kind}"

    def tombstone(self, kind: str, namespace: str, name: str) -> str:
        """String holding the resourceVersion at which an object was deleted."""
        return self.tombstone_of(kind, self.member(namespace, name))

    def tombstone_of(self, kind: str, member: str) -> str:
        """The tombstone of an index member."""
        return f"{self.prefix}:tombstone:{kind}:{member}"

    def relist(self, kind: str, scope: str) -> str:
        """Hash of the newest relist of a kind in a scope: list rv and members."""
        return f"{self.prefix}:relist:{kind}:{scope or '*'}"

    def relist_members(self, kind: str, scope: str) -> str:
        """Set of the members that relist listed."""
        return f"{self.relist(kind, scope)}:members"

    def relist_staging(self, kind: str, scope: str, list_rv: str) -> str:
        """Set of the members a list at list_rv held, added a chunk per call until
        the whole list is in (then renamed to relist_sweep). Keyed by the list's rv,
        so two relists of a scope in flight at once never mix their members."""
        return f"{self.relist(kind, scope)}:staging:{list_rv}"

    def relist_sweep(self, kind: str, scope: str) -> str:
        """Set of the members of the list whose sweep is in progress (the relist
        record's ``sweeping`` field says its rv); renamed to relist_members when
        the sweep ends."""
        return f"{self.relist(kind, scope)}:sweep"

    @property
    def stream(self) -> str:
        """Stream of raw watch events, written by watchers."""
        return f"{self.prefix}:events"

    @property
    def dead_letter(self) -> str:
        """Stream of entries the projector could not apply, with the reason."""
        return f"{self.prefix}:events:dead"

    @property
    def changes(self) -> str:
        """Change feed: one entry per change applied to a state key."""
        return f"{self.prefix}:changes"

    @property
    def checkpoints(self) -> str:
        """Hash of resource scope -> last resourceVersion appended to the stream."""
        return f"{self.prefix}:checkpoints"

    @property
    def checkpoint_marks(self) -> str:
        """Hash of resource scope -> how many appends touched it. Only ever counts
        up, so a count lower than the watcher last wrote means Redis lost writes."""
        return f"{self.prefix}:checkpoints:marks"

    @property
    def checkpoint_writers(self) -> str:
        """Hash of resource scope -> id of the watcher that appended to it last."""
        return f"{self.prefix}:checkpoints:writers"

    @property
    def checkpoint_kinds(self) -> str:
        """Hash of resource scope -> JSON kind and namespace of what it mirrors (so a
        resource no longer served when a watcher starts can still be purged)."""
        return f"{self.prefix}:checkpoints:kinds"

    @property
    def fence(self) -> str:
        """String: the highest fencing token a watcher of this mirror (or shard) raised
        it to; appends of a watcher with a lower token are refused (watcher/fence.py)."""
        return f"{self.prefix}:fence"

    @property
    def cluster(self) -> str:
        """String: uid of the cluster's kube-system namespace, which the checkpoints
        belong to."""
        return f"{self.prefix}:cluster"

    @property
    def resync_requests(self) -> str:
        """Stream of requests that watchers relist scopes now (`kube2redis resync`)."""
        return f"{self.prefix}:resync"

    def resync_answers(self, request_id: str) -> str:
        """Hash of scope -> JSON answer of the watcher serving a resync request."""
        return f"{self.prefix}:resync:{request_id}"

    def projector(self, group: str, consumer: str) -> str:
        """String with a TTL: a running projector's heartbeat (pid)."""
        return f"{self.prefix}:projectors:{group}:{consumer}"

    @property
    def watchers(self) -> str:
        """Hash of watcher id -> JSON status (spool depth, last event time)."""
        return f"{self.prefix}:watchers"
