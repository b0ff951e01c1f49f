"""The HTTP gateway: the single choke point for authentication, quotas and admission. It only
produces and reads events; everything it knows is a projection of topics."""
