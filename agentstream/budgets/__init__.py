"""Tenant budgets and cost kill switches: operator controls on the `control` topic."""
