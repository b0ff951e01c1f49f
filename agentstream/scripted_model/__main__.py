from agentstream.scripted_model.runner import main

main()
