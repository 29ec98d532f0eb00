"""Admin tools shared by ``kdns explain`` and ``nodecache explain``: what a pod's libc sends for
one lookup (``libc``), running that plan against an answerer (``lookup``), the answerers (kdns
alone from a snapshot: ``snapshot``; a live server: ``live``), and the output (``render``)."""
