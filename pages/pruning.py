"""Pruning savings (AEP): for each cut point, parameters, MACs, latency and accuracy."""
import streamlit as st

st.title("Pruning savings")
st.info("The pruning module is not available yet.")
