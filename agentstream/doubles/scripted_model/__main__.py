from agentstream.doubles.scripted_model.runner import main

main()
