"""Writes for widgets, by concern: widgets (create, publish, ...), catalog (knowledge, products), leads,
preview links and turns (the transcript rows every channel writes). Reads live in `widgets.selectors`."""
