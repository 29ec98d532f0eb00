"""Admin tools shared by ``kdns explain`` and ``nodecache explain``: what a pod's libc sends for
one lookup (``libc``) from the pod's resolv.conf (``podconf``: the kubelet's; ``podapi``: a Pod
read from the API), running that plan against an answerer (``lookup``), the answerers (kdns
from a snapshot and kdns alone: ``snapshot``; the world outside offline: ``outside``; a live
server: ``live``), the variants and the fixes (``explain``), the output (``render``) and the
shared flags (``command``)."""
