def moving_average(values, window):
    """Return the moving averages of `values` over `window` items."""
    if window <= 0:
        raise ValueError("window must be positive")
    averages = []
    total = 0
    for index, value in enumerate(values):
        total += value
        if index >= window:
            total -= values[index - window + 1]
        if index >= window - 1:
            averages.append(total / window)
    return averages


def summarize(values):
    """Smallest, largest and mean of `values`."""
    smallest = min(values)
    largest = max(values)
    mean = sum(values) / len(values)
    return {"smallest": smallest, "largest": largest, "mean": mean}


def report(values, window=3):
    averages = moving_average(values, window)
    summary = summarize(values)
    lines = [f"{name}: {value:.2f}" for name, value in summary.items()]
    lines.append("moving averages: " + ", ".join(f"{a:.2f}" for a in averages))
    return "\n".join(lines)
