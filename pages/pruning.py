"""Pruning savings (AEP): for each cut point, parameters, MACs, latency and accuracy."""
import streamlit as st

import app_shared as shared

shared.ensure_entry("pruning")
st.title("Pruning savings")
st.info("The pruning module is not available yet.")
