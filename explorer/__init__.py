"""What the pages of the Streamlit app share: session state and URL, model loading and caches, shared
widgets, and the Altair chart builders."""
