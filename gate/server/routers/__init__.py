"""One router per area of the panel; each sets its own role requirement."""
