"""The backend's durable lane: the automerge-repo sync endpoint, ride HTTP API and finalization."""
